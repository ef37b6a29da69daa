"""SLA policy file: first match, targets and durations, calendars, ladders, validation messages."""
from datetime import datetime, timezone
from pathlib import Path

import pytest

from shared.business_calendar import make_calendar
from shared.sla_policy import (DEFAULT_LADDER, PolicyError, Rung, expected_first_response, load_policies,
                               load_sla_config, parse_duration, parse_policies, select_policy)

REPO = Path(__file__).resolve().parents[4]
DEFAULT_POLICIES = REPO / "deploy" / "config" / "sla.yaml"
DEMO_POLICIES = REPO / "deploy" / "demo" / "sla.yaml"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def test_default_file_targets_by_priority_with_shorter_chat():
    policies = load_policies(DEFAULT_POLICIES)

    def target(priority, channel):
        return select_policy(policies, priority=priority, channel=channel).first_response_seconds

    assert [target(p, "email") for p in ("P1", "P2", "P3", "P4")] == [900, 3600, 14400, 28800]
    assert all(target(p, "chat") < target(p, "email") for p in ("P1", "P2", "P3", "P4"))
    assert select_policy(policies, priority="P3", channel="phone").warn_at == (0.8,)
    vip = select_policy(policies, priority="P1", channel="email", customer_tier="vip")
    assert (vip.name, vip.calendar, vip.first_response_seconds) == ("vip P1", "cn-support", 3600)
    assert vip.business_calendar is not None and vip.business_calendar.name == "cn-support"


@pytest.mark.parametrize("path", [DEFAULT_POLICIES, DEMO_POLICIES])
def test_shipped_files_load_with_their_calendars(path):
    config = load_sla_config(path)
    assert "always" in config.calendars and "cn-support" in config.calendars
    assert config.policies[-1].priorities is None or path == DEMO_POLICIES  # production ends with a fallback
    assert load_sla_config(path).digest == config.digest


def test_first_matching_policy_wins_and_tier_and_category_conditions_apply():
    policies = parse_policies({"policies": [
        {"name": "vip", "when": {"customer_tier": "vip"}, "first_response": 60},
        {"name": "refunds", "when": {"category": ["refund"]}, "first_response": "30m"},
        {"name": "p1", "when": {"priority": ["P1"]}, "first_response": 900, "warn_at": [0.9, 0.5]},
    ]})
    assert select_policy(policies, priority="P1", channel="email", customer_tier="vip").name == "vip"
    assert select_policy(policies, priority="P1", channel="email", category="refund").name == "refunds"
    p1 = select_policy(policies, priority="P1", channel="email")
    assert p1.name == "p1" and p1.warn_at == (0.5, 0.9)
    assert select_policy(policies, priority="P3", channel="email") is None


@pytest.mark.parametrize("text,seconds", [(90, 90), ("90s", 90), ("15m", 900), ("4h", 14400), ("1h30m", 5400),
                                          ("1.5h", 5400), ("2", 2)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_targets_ladders_and_reopen_escalation():
    [policy] = parse_policies({"policies": [{
        "name": "full", "first_response": "1h", "next_response": "2h", "resolution": "8h",
        "escalation": [{"after": "1h", "action": "notify_duty_manager"}, {"after": 0, "action": "notify_supervisor"},
                       {"after": "30m", "action": "raise_priority", "to": "P1"}],
        "reopen_escalation_hours": 24}]})
    assert (policy.target("first_response"), policy.target("next_response"), policy.target("resolution")) == \
        (3600, 7200, 28800)
    assert policy.ladder == (Rung(0, "notify_supervisor"), Rung(1800, "raise_priority", "P1"),
                             Rung(3600, "notify_duty_manager"))
    assert policy.reopen_escalation_seconds == 24 * 3600
    assert [r.action for r in policy.reopen_actions] == ["notify_supervisor"]


def test_without_a_ladder_a_breach_reassigns_unless_told_not_to():
    default, quiet = parse_policies({"policies": [{"name": "a", "first_response": 5},
                                                  {"name": "b", "first_response": 5, "escalate_on_breach": False}]})
    assert default.ladder == DEFAULT_LADDER and quiet.ladder == ()
    assert default.target("resolution") is None and default.reopen_actions == ()


@pytest.mark.parametrize("data,message", [
    ({"policies": [{"name": "fast", "first_response": 0}]}, "policy 1 'fast': first_response"),
    ({"policies": [{"name": "a", "first_response": 5}, {"name": "b", "first_response": 5, "warn_at": [1.2]}]},
     "policy 2 'b': warn_at: Value error, warning points are fractions of the target between 0 and 1, got 1.2"),
    ({"policies": [{"name": "a", "when": {"priority": ["P7"]}, "first_response": 5}]}, "policy 1 'a': when.priority"),
    ({"policies": [{"name": "a", "first_response": 5, "resolve_within": 9}]}, "policy 1 'a': resolve_within: Extra"),
    ({"policies": [{"name": "a", "first_response": "soon"}]}, "policy 1 'a': first_response: Value error, expected"),
    ({"policies": [{"name": "a", "first_response": 5, "escalation": [{"action": "raise_priority"}]}]},
     "raise_priority needs to: one of P1"),
    ({"policies": [{"name": "a", "first_response": 5, "escalation": [{"action": "reassign_next_tier", "to": "L9"}]}]},
     "reassign_next_tier to: is one of"),
    ({"policies": [{"name": "a", "first_response": 5, "escalation": [{"action": "notify_boss"}]}]},
     "policy 1 'a': escalation.0.action"),
    ({"policies": [{"name": "a", "first_response": 5, "reopen_escalation": [{"action": "notify_supervisor"}]}]},
     "reopen_escalation needs reopen_escalation_hours"),
    ({"policies": [{"name": "a", "first_response": 5}, {"name": "a", "first_response": 6}]}, "repeated: a"),
    ({"policies": []}, "policies: List should have at least 1 item"),
    ("policies", "expected a mapping"),
])
def test_bad_policies_fail_with_a_message_naming_the_policy(data, message):
    with pytest.raises(PolicyError) as info:
        parse_policies(data)
    assert message in str(info.value)


def test_a_policy_naming_an_unknown_calendar_is_refused(tmp_path):
    (tmp_path / "sla.yaml").write_text("policies:\n  - {name: a, calendar: nowhere, first_response: 60}\n")
    with pytest.raises(PolicyError, match="policy 1 'a': calendar: 'nowhere' is not defined"):
        load_sla_config(tmp_path / "sla.yaml")


def test_bad_file(tmp_path):
    path = tmp_path / "sla.yaml"
    path.write_text("policies: [\n", encoding="utf-8")
    with pytest.raises(PolicyError, match="is not valid YAML"):
        load_policies(path)


def test_expected_first_response_counts_business_time():
    office = make_calendar("office", "UTC", {"mon-fri": ["09:00-18:00"]})
    policies = parse_policies({"policies": [
        {"name": "mail", "calendar": "office", "first_response": "2h"},
    ]}, calendars={"always": office, "office": office})
    friday_evening = utc("2026-01-02T17:00:00")
    assert expected_first_response(policies, priority="P3", channel="email", received_at=friday_evening) == \
        utc("2026-01-05T10:00:00")
    always = parse_policies({"policies": [{"name": "mail", "first_response": "2h"}]})
    assert expected_first_response(always, priority="P3", channel="email", received_at=friday_evening) == \
        utc("2026-01-02T19:00:00")
    unresolved = parse_policies({"policies": [{"name": "mail", "calendar": "office", "first_response": 60}]})
    assert expected_first_response(unresolved, priority="P3", channel="email", received_at=friday_evening,
                                   calendars={"office": office}) == utc("2026-01-02T17:01:00")
    with pytest.raises(PolicyError, match="was not loaded"):
        expected_first_response(unresolved, priority="P3", channel="email", received_at=friday_evening)
