"""``ticketmesh dispatch explain|queues|agents`` against a real Redis the dispatcher's own code filled."""
import json
from datetime import datetime, timezone

from services.dispatcher.assigner import Assigner
from services.dispatcher.policy import load_policy
from services.dispatcher.store import DispatchStore, TicketFacts
from services.dispatcher.tests.service.test_dispatcher_service import plain_rules
from shared import events as ev
from shared.cli import main
from shared.roster import AgentProfile

ROUTING = {"offer_timeout_seconds": 60, "fairness": {"window_minutes": 60, "max_assignments": 5}}


def agent(agent_id, skills, languages, capacity, **extra):
    return AgentProfile(agent_id=agent_id, name=agent_id, password_hash="scrypt$x", skills=skills, languages=languages,
                        capacity=capacity, **extra)


def facts(ticket_id, channel, skills, language):
    return TicketFacts(ticket_id=ticket_id, trace_id=f"trace-{ticket_id}", channel=channel, priority="P3",
                       required_skills=tuple(skills), language=language, tags=(),
                       received_at=datetime.now(timezone.utc), matched_rules=("billing",) if "billing" in skills else ())


def fill(redis_client, rules_file):
    """What a running dispatcher leaves behind: a roster, presence, an offer and a waiting ticket."""
    store = DispatchStore(redis_client, load_policy(rules_file))
    store.load_roster([
        agent("li.na", {"billing": 5, "general": 3}, ["zh", "en"], {"email": 2, "chat": 1}, group="billing"),
        agent("sam.taylor", {"general": 4}, ["en"], {"email": 10}, tier="L2"),
        agent("chen.wei", {"general": 3, "billing": 2}, ["zh"], {"email": 5}),
    ])
    now = datetime.now(timezone.utc).timestamp()
    for agent_id, presence in (("li.na", "online"), ("sam.taylor", "online"), ("chen.wei", "offline")):
        store.set_presence(agent_id, presence, now)
    events = []
    assigner = Assigner(store, lambda event_type, **body: events.append((event_type, body)) or body,
                        clock=lambda: datetime.now(timezone.utc), policy=store.policy)
    assert assigner.receive(facts("TM-1", "email", ["billing"], "zh")) == "assigned"
    assert assigner.receive(facts("TM-2", "chat", ["technical"], "zh")) == "queued"
    assert [t for t, _ in events] == [ev.TICKET_CLASSIFIED, ev.TICKET_ASSIGNED, ev.TICKET_CLASSIFIED, ev.TICKET_QUEUED]


def cli(capsys, monkeypatch, redis_url, rules_file, *args):
    monkeypatch.setenv("TM_REDIS_URL", redis_url)
    monkeypatch.setenv("TM_ROUTING_RULES_FILE", rules_file)
    capsys.readouterr()
    code = main(["dispatch", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_explain_shows_the_decision_with_scores_and_rejections(redis_client, redis_url, capsys, monkeypatch):
    rules = plain_rules(ROUTING)
    fill(redis_client, rules)

    code, out, _ = cli(capsys, monkeypatch, redis_url, rules, "explain", "TM-1", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["ticket"]["state"] == "assigned" and data["ticket"]["agent_id"] == "li.na"
    assert data["ticket"]["offer_expires_at"] is not None and data["ticket"]["accepted_by"] is None
    [decision] = data["decisions"]
    assert decision["winner"] == "li.na" and decision["step"] == "initial"
    assert [c["agent_id"] for c in decision["candidates"]] == ["li.na"]
    assert decision["rejected"] == {"chen.wei": "presence: offline", "sam.taylor": "tier: L2 not in L1"}

    code, out, _ = cli(capsys, monkeypatch, redis_url, rules, "explain", "TM-1")
    assert code == 0
    assert "assigned to li.na (offered, until" in out
    assert "step initial  → li.na" in out
    assert "* li.na" in out and "SPARE" in out
    assert "rejected: 1 presence, 1 tier" in out
    assert "presence: chen.wei (offline)" in out and "tier: sam.taylor (L2 not in L1)" in out

    code, out, _ = cli(capsys, monkeypatch, redis_url, rules, "explain", "TM-2")
    assert code == 0 and "waiting since" in out and "→ queued (no agent)" in out
    assert "rejected: 1 presence, 1 skill, 1 tier" in out and "skill: li.na (lacks technical)" in out

    code, out, err = cli(capsys, monkeypatch, redis_url, rules, "explain", "TM-404")
    assert code == 2 and out == "" and "no routing record for TM-404" in err


def test_queues_and_agents_show_what_waits_and_who_holds_what(redis_client, redis_url, capsys, monkeypatch):
    rules = plain_rules(ROUTING)
    fill(redis_client, rules)

    code, out, _ = cli(capsys, monkeypatch, redis_url, rules, "queues", "--json")
    [queue] = json.loads(out)
    assert code == 0
    assert {k: queue[k] for k in ("channel", "skills", "language", "group", "tiers", "waiting")} == {
        "channel": "chat", "skills": ["technical"], "language": "zh", "group": None, "tiers": ["L1"], "waiting": 1}
    assert 0 <= queue["oldest_wait_seconds"] < 60
    code, out, _ = cli(capsys, monkeypatch, redis_url, rules, "queues")
    assert code == 0 and "chat     technical  zh" in out and "1 waiting in 1 queue " in out

    code, out, _ = cli(capsys, monkeypatch, redis_url, rules, "agents", "--json")
    data = json.loads(out)
    assert code == 0 and data["capacity_model"] == "shared" and data["fairness_max"] == 5
    by_id = {a["agent_id"]: a for a in data["agents"]}
    assert by_id["li.na"]["load"] == {"email": {"open": 1, "capacity": 2}, "chat": {"open": 0, "capacity": 1}}
    assert by_id["li.na"]["share_used"] == 0.5 and by_id["li.na"]["recent_assignments"] == 1
    assert by_id["li.na"]["offers_pending"] == ["TM-1"] and by_id["li.na"]["group"] == "billing"
    assert (by_id["sam.taylor"]["tier"], by_id["sam.taylor"]["offers_pending"]) == ("L2", [])
    assert by_id["chen.wei"]["presence"] == "offline"

    code, out, _ = cli(capsys, monkeypatch, redis_url, rules, "agents")
    line = next(row for row in out.splitlines() if row.startswith("li.na"))
    assert code == 0 and "email 1/2 chat 0/1" in line and "50%" in line and "1/5" in line and "1 (TM-1)" in line

    redis_client.flushdb()
    assert cli(capsys, monkeypatch, redis_url, rules, "queues")[1].strip() == "no tickets waiting"
