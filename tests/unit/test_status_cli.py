"""``ticketmesh status``: what counts as a problem, and the human-readable layout."""
import json

from shared import status_cli
from shared.cli import build_parser
from shared.topology import DEAD_LETTER_QUEUE


def sample(**overrides):
    data = {
        "at": 0,
        "replicas": [{"service": s, "replica": f"{s}-1", "host": "h", "pid": 1, "http": "", "up_seconds": 5,
                      "seen_seconds_ago": 1.0} for s in status_cli.SERVICES],
        "queues": [{"queue": "evt-x--dispatcher.handle", "messages": 0, "ready": 0, "unacked": 0, "consumers": 1},
                   {"queue": DEAD_LETTER_QUEUE, "messages": 0, "ready": 0, "unacked": 0, "consumers": 0}],
        "quarantined": {}, "agents": {"online": 2, "offline": 1}, "tickets": {"queued": 3, "accepted": 1},
        "sla": {"at_risk": 1, "due_now": 0, "due_next_15m": 2},
    }
    data.update(overrides)
    return data


def test_a_healthy_mesh_has_no_problems():
    assert status_cli.problems(sample()) == []


def test_missing_services_dead_letters_orphan_queues_quarantine_and_overdue_sla_are_problems():
    data = sample(
        replicas=[r for r in sample()["replicas"] if r["service"] != "notifier"],
        queues=[{"queue": DEAD_LETTER_QUEUE, "messages": 4, "ready": 4, "unacked": 0, "consumers": 0},
                {"queue": "evt-y--gone.handle", "messages": 9, "ready": 9, "unacked": 0, "consumers": 0}],
        quarantined={"support": 2}, sla={"at_risk": 0, "due_now": 5, "due_next_15m": 0})
    found = status_cli.problems(data)
    assert "no replica of notifier is running" in found
    assert any(p.startswith("4 dead letters") for p in found)
    assert any("evt-y--gone.handle holds 9 messages and has no consumer" in p for p in found)
    assert any(p.startswith("2 mails in quarantine") for p in found)
    assert any(p.startswith("5 SLA clocks due") for p in found)


def test_dispatchers_on_different_or_refused_config_files_are_problems():
    same = {"sha256": "a" * 64, "error": None}
    healthy = sample(config={"roster": {"d-1": same, "d-2": same}, "rules": {"d-1": same, "d-2": same}})
    assert status_cli.problems(healthy) == []
    data = sample(config={
        "roster": {"d-1": same, "d-2": {"sha256": "b" * 64, "error": None}},
        "rules": {"d-1": same, "d-2": {"sha256": "a" * 64, "error": "rule 3: field 'skill' is required"}}})
    found = status_cli.problems(data)
    assert "dispatcher replicas use different roster files: d-1 aaaaaaaaaaaa, d-2 bbbbbbbbbbbb (ticketmesh roster reload)" in found
    assert "dispatcher d-2 kept its rules: the newer file is invalid: rule 3: field 'skill' is required" in found
    assert len(found) == 2


def test_an_unreadable_part_is_reported_and_the_rest_still_shown():
    data = sample(queues={"error": "URLError: refused"})
    data["problems"] = status_cli.problems(data)
    text = status_cli.format_text(data)
    assert "cannot read queues: URLError: refused" in data["problems"]
    assert "unavailable: URLError: refused" in text
    assert "dead letters: ?" in text
    assert "online 2" in text and "4 open: accepted 1, queued 3" in text


def test_text_view_has_a_replica_table_and_sla_line():
    data = sample()
    data["problems"] = []
    text = status_cli.format_text(data)
    lines = text.splitlines()
    header = next(line for line in lines if line.strip().startswith("SERVICE"))
    assert "REPLICA" in header and "SEEN_SECONDS_AGO" in header
    assert any(line.strip().startswith("dispatcher") and "dispatcher-1" in line for line in lines)
    assert "at risk 1, due now 0, due in the next 15 min 2" in text
    assert text.rstrip().endswith("no problems")
    json.dumps(data)  # --json prints the same data


def test_status_is_a_ticketmesh_command():
    args = build_parser().parse_args(["status", "--json"])
    assert args.json and args.func is status_cli._cmd_status
