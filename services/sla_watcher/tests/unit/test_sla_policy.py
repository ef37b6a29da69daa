"""SLA policy file: first match, defaults, validation messages."""
from pathlib import Path

import pytest

from shared.sla_policy import PolicyError, load_policies, parse_policies, select_policy

DEFAULT_POLICIES = Path(__file__).resolve().parents[4] / "deploy" / "config" / "sla.yaml"


def test_default_file_targets_by_priority_with_shorter_chat():
    policies = load_policies(DEFAULT_POLICIES)

    def target(priority, channel):
        return select_policy(policies, priority=priority, channel=channel).first_response_seconds

    assert [target(p, "email") for p in ("P1", "P2", "P3", "P4")] == [900, 3600, 14400, 28800]
    assert all(target(p, "chat") < target(p, "email") for p in ("P1", "P2", "P3", "P4"))
    assert select_policy(policies, priority="P3", channel="phone").warn_at == (0.8,)


def test_first_matching_policy_wins_and_tier_condition_applies():
    policies = parse_policies({"policies": [
        {"name": "vip", "when": {"customer_tier": "vip"}, "first_response": 60},
        {"name": "p1", "when": {"priority": ["P1"]}, "first_response": 900, "warn_at": [0.9, 0.5]},
    ]})
    assert select_policy(policies, priority="P1", channel="email", customer_tier="vip").name == "vip"
    p1 = select_policy(policies, priority="P1", channel="email")
    assert p1.name == "p1" and p1.warn_at == (0.5, 0.9)
    assert select_policy(policies, priority="P3", channel="email") is None


@pytest.mark.parametrize("data,message", [
    ({"policies": [{"name": "fast", "first_response": 0}]}, "policy 1 'fast': first_response"),
    ({"policies": [{"name": "a", "first_response": 5}, {"name": "b", "first_response": 5, "warn_at": [1.2]}]},
     "policy 2 'b': warn_at: Value error, warning points are fractions of the target between 0 and 1, got 1.2"),
    ({"policies": [{"name": "a", "when": {"priority": ["P7"]}, "first_response": 5}]}, "policy 1 'a': when.priority"),
    ({"policies": [{"name": "a", "first_response": 5, "resolution": 9}]}, "policy 1 'a': resolution: Extra inputs"),
    ({"policies": [{"name": "a", "first_response": 5}, {"name": "a", "first_response": 6}]}, "repeated: a"),
    ({"policies": []}, "policies: List should have at least 1 item"),
    ("policies", "expected a mapping"),
])
def test_bad_policies_fail_with_a_message_naming_the_policy(data, message):
    with pytest.raises(PolicyError) as info:
        parse_policies(data)
    assert message in str(info.value)


def test_bad_file(tmp_path):
    path = tmp_path / "sla.yaml"
    path.write_text("policies: [\n", encoding="utf-8")
    with pytest.raises(PolicyError, match="is not valid YAML"):
        load_policies(path)
