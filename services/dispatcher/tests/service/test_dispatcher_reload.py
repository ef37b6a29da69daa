"""Hot reload in a running dispatcher: rules, routing policy and roster change without a restart."""
import os

import structlog
import yaml
from nameko.testing.services import entrypoint_waiter

from services.dispatcher.service import DispatcherService
from services.dispatcher.tests.service.test_dispatcher_service import (
    NOW,
    PASSWORD_HASH,
    SLA_FILE,
    collect,
    go_online,
    of,
    received,
)
from shared import events as ev
from shared.testing.plugin import poll_until


def replace_file(path, data):
    """Write ``data`` as YAML the way an operator's deploy does: a new file moved into place."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as out:
        yaml.safe_dump(data, out, allow_unicode=True)
    os.replace(tmp, path)


def roster(*agents):
    return {"agents": [{"agent_id": agent_id, "name": agent_id, "password_hash": PASSWORD_HASH,
                        "skills": {"general": 3}, "languages": ["zh", "en"], "capacity": {"email": cap}}
                       for agent_id, cap in agents]}


def parcel_rules(skill, priority, routing=None):
    data = {"defaults": {"skills": ["general"], "priority": "P3"},
            "rules": [{"name": "parcel", "when": {"keywords": ["parcel"]},
                       "then": {"skills": [skill], "priority": priority}}]}
    if routing is not None:
        data["routing"] = routing
    return data


def start(service_container, tmp_path, rules, agents):
    rules_file, roster_file = tmp_path / "routing.yaml", tmp_path / "roster.yaml"
    replace_file(rules_file, rules)
    replace_file(roster_file, agents)
    container = service_container(DispatcherService, TM_ROSTER_FILE=str(roster_file),
                                  TM_ROUTING_RULES_FILE=str(rules_file), TM_SLA_POLICY_FILE=str(SLA_FILE),
                                  TM_CONFIG_RELOAD_SECONDS="0")
    container.start()
    return container, rules_file, roster_file


def classified(listener, ticket_id):
    events = collect(listener, lambda seen: of(seen, ev.TICKET_CLASSIFIED, ticket_id)
                     and (of(seen, ev.TICKET_ASSIGNED, ticket_id) or of(seen, ev.TICKET_QUEUED, ticket_id)))
    [body] = of(events, ev.TICKET_CLASSIFIED, ticket_id)
    return body, events


def test_changed_rules_and_policy_apply_to_the_next_ticket_and_a_bad_version_keeps_them(
        service_container, tmp_path, publish, store, event_listener):
    roster_data = roster(("li.na", 10))
    for agent in roster_data["agents"]:
        agent["skills"] = {"general": 3, "shipping": 3, "logistics": 3}
    _, rules_file, _ = start(service_container, tmp_path, parcel_rules("shipping", "P2"), roster_data)
    listener = event_listener(ev.DISPATCHER)
    go_online(publish, store, "li.na")

    publish(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, received("TM-1", text="where is my parcel"))
    body, events = classified(listener, "TM-1")
    assert (body["required_skills"], body["priority"]) == (["shipping"], "P2")
    assert of(events, ev.TICKET_ASSIGNED, "TM-1")[0]["offer_expires_at"] is not None  # default policy: offers

    replace_file(rules_file, parcel_rules("logistics", "P1", routing={"offer_timeout_seconds": 0}))
    publish(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, received("TM-2", text="where is my parcel"))
    body, events = classified(listener, "TM-2")
    assert (body["required_skills"], body["priority"]) == (["logistics"], "P1")
    assert of(events, ev.TICKET_ASSIGNED, "TM-2")[0]["offer_expires_at"] is None  # the new policy: no offers

    with structlog.testing.capture_logs() as logs:
        replace_file(rules_file, parcel_rules("returns", "P9"))
        publish(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, received("TM-3", text="where is my parcel"))
        body, _ = classified(listener, "TM-3")
        replace_file(rules_file, parcel_rules("returns", "P2", routing={"capacity_model": "per_seat"}))
        publish(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, received("TM-4", text="where is my parcel"))
        body4, events = classified(listener, "TM-4")
    assert (body["required_skills"], body["priority"]) == (["logistics"], "P1")
    assert (body4["required_skills"], body4["priority"]) == (["logistics"], "P1")
    assert of(events, ev.TICKET_ASSIGNED, "TM-4")[0]["offer_expires_at"] is None
    failures = [entry for entry in logs if entry["event"] == "config_reload_failed"]
    assert [f["config"] for f in failures] == ["routing rules", "routing rules"]
    assert "rule 1 'parcel': then.priority" in failures[0]["error"] and str(rules_file) in failures[0]["error"]
    assert "routing.capacity_model" in failures[1]["error"]
    assert all(f["kept_version"] == 2 for f in failures)


def test_roster_changes_take_effect_without_a_restart(service_container, tmp_path, publish, store, event_listener):
    container, _, roster_file = start(service_container, tmp_path, parcel_rules("shipping", "P2"),
                                      roster(("li.na", 1)))
    listener = event_listener(ev.DISPATCHER)
    go_online(publish, store, "li.na", "sam.taylor")  # sam is not on the roster yet
    publish(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, received("TM-1"))
    [first] = of(collect(listener, lambda seen: of(seen, ev.TICKET_ASSIGNED, "TM-1")), ev.TICKET_ASSIGNED)
    assert first["agent_id"] == "li.na"
    publish(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, received("TM-2", received_at=NOW.replace(minute=1)))
    [queued] = of(collect(listener, lambda seen: of(seen, ev.TICKET_QUEUED, "TM-2")), ev.TICKET_QUEUED)
    assert queued["decision"]["considered"] == 1

    # A new agent: already online, they take the waiting ticket as soon as the roster is in.
    replace_file(roster_file, roster(("li.na", 1), ("sam.taylor", 1)))
    [assigned] = of(collect(listener, lambda seen: of(seen, ev.TICKET_ASSIGNED, "TM-2")), ev.TICKET_ASSIGNED)
    assert assigned["agent_id"] == "sam.taylor" and "(roster_changed)" in assigned["decision"]["reason"]

    # A capacity change: li.na's second slot takes the next waiting ticket.
    publish(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, received("TM-3", received_at=NOW.replace(minute=2)))
    collect(listener, lambda seen: of(seen, ev.TICKET_QUEUED, "TM-3"))
    replace_file(roster_file, roster(("li.na", 2), ("sam.taylor", 1)))
    [assigned] = of(collect(listener, lambda seen: of(seen, ev.TICKET_ASSIGNED, "TM-3")), ev.TICKET_ASSIGNED)
    assert assigned["agent_id"] == "li.na" and "(roster_changed)" in assigned["decision"]["reason"]
    with entrypoint_waiter(container, "handle_ticket_accepted", timeout=10):
        publish(ev.AGENT_DESK, ev.TICKET_ACCEPTED, ev.make_event(
            ev.AGENT_DESK, ev.TICKET_ACCEPTED, now=NOW, trace_id="trace-TM-1", ticket_id="TM-1", agent_id="li.na"))

    # Removed: li.na's accepted ticket and her open offer both go back to routing; sam is full.
    replace_file(roster_file, roster(("sam.taylor", 1)))
    events = collect(listener, lambda seen: of(seen, ev.TICKET_QUEUED, "TM-1") and of(seen, ev.TICKET_QUEUED, "TM-3"))
    unassigned = of(events, ev.TICKET_UNASSIGNED)
    assert sorted((b["ticket_id"], b["agent_id"], b["reason"], b["by"]) for b in unassigned) == [
        ("TM-1", "li.na", "roster_removed", None), ("TM-3", "li.na", "roster_removed", None)]
    assert store.open_tickets("li.na") == set() and store.load_of("li.na", "email") == 0
    assert sorted(store.waiting_ids()) == ["TM-1", "TM-3"]
    assert [a.agent_id for a in store.agent_snapshots()] == ["sam.taylor"]
    assert not store.is_known_agent("li.na")


def test_replicas_reloading_one_roster_return_a_removed_agents_ticket_once(service_container, tmp_path, publish,
                                                                           store, event_listener, redis_client):
    _, _, roster_file = start(service_container, tmp_path, parcel_rules("shipping", "P2"), roster(("li.na", 2)))
    service_container(DispatcherService, TM_ROSTER_FILE=str(roster_file),
                      TM_ROUTING_RULES_FILE=str(tmp_path / "routing.yaml"), TM_SLA_POLICY_FILE=str(SLA_FILE),
                      TM_CONFIG_RELOAD_SECONDS="0").start()
    listener = event_listener(ev.DISPATCHER)
    go_online(publish, store, "li.na", "chen.wei")
    publish(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, received("TM-1"))
    collect(listener, lambda seen: of(seen, ev.TICKET_ASSIGNED, "TM-1"))

    replace_file(roster_file, roster(("chen.wei", 3)))
    events = collect(listener, lambda seen: of(seen, ev.TICKET_ASSIGNED, "TM-1") and of(seen, ev.TICKET_UNASSIGNED))
    assert [(b["agent_id"], b["reason"]) for b in of(events, ev.TICKET_UNASSIGNED)] == [("li.na", "roster_removed")]
    assert [b["agent_id"] for b in of(events, ev.TICKET_ASSIGNED)] == ["chen.wei"]
    # Both replicas wrote the same roster: one agent, its capacity, an index holding only them.
    poll_until(lambda: redis_client.hkeys("tm:dispatcher:agents") == ["chen.wei"], what="roster written")
    assert redis_client.hgetall("tm:dispatcher:capacity") == {"chen.wei:email": "3"}
    assert redis_client.zrange("tm:dispatcher:avail:email:general", 0, -1) == ["chen.wei"]
    assert store.load_of("chen.wei", "email") == 1 and store.load_of("li.na", "email") == 0
