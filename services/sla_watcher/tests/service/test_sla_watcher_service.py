"""The SLA watcher in nameko containers against a real RabbitMQ vhost and Redis database."""
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from nameko.standalone.events import event_dispatcher
from nameko.testing.services import entrypoint_waiter

from services.sla_watcher.clocks import FIRST_RESPONSE, due_items
from services.sla_watcher.service import SlaWatcherService
from services.sla_watcher.store import SlaStore
from shared import events as ev
from shared.testing.plugin import poll_until

DEFAULT_POLICIES = Path(__file__).resolve().parents[4] / "deploy" / "config" / "sla.yaml"
FIRE_TOLERANCE_SECONDS = 1.0


def at(epoch):
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


def classified(ticket_id, received_at, priority="P1", channel="email"):
    return ev.make_event(ev.DISPATCHER, ev.TICKET_CLASSIFIED, now=at(time.time()), trace_id=f"trace-{ticket_id}",
                         ticket_id=ticket_id, channel=channel, priority=priority, required_skills=["general"],
                         language="zh", received_at=at(received_at))


def assigned(ticket_id, agent_id):
    return ev.make_event(ev.DISPATCHER, ev.TICKET_ASSIGNED, now=at(time.time()), trace_id=f"trace-{ticket_id}",
                         ticket_id=ticket_id, agent_id=agent_id, channel="email", priority="P1",
                         required_skills=["general"],
                         decision={"considered": 1, "eligible": 1, "reason": "only one", "rejected": {}})


def unassigned(ticket_id, agent_id):
    return ev.make_event(ev.DISPATCHER, ev.TICKET_UNASSIGNED, now=at(time.time()), trace_id=f"trace-{ticket_id}",
                         ticket_id=ticket_id, agent_id=agent_id, reason="declined", by=agent_id)


def replied(ticket_id):
    return ev.make_event(ev.AGENT_DESK, ev.AGENT_REPLIED, now=at(time.time()), trace_id=f"trace-{ticket_id}",
                         ticket_id=ticket_id, agent_id="li.na", channel="email", text="您好，已处理",
                         reply_id=f"r-{ticket_id}", customer={"name": "张伟"})


def resolved(ticket_id):
    return ev.make_event(ev.AGENT_DESK, ev.TICKET_RESOLVED, now=at(time.time()), trace_id=f"trace-{ticket_id}",
                         ticket_id=ticket_id, agent_id="li.na", channel="email")


def tiny_policies(tmp_path, target=1, warn_at=(0.5,), **extra):
    path = tmp_path / "sla.yaml"
    path.write_text(yaml.safe_dump({"policies": [
        {"name": "tiny", "first_response": target, "warn_at": list(warn_at), **extra}]}), encoding="utf-8")
    return str(path)


@pytest.fixture
def publish(amqp_uri):
    dispatch = event_dispatcher({"AMQP_URI": amqp_uri})
    return lambda source, event_type, body: dispatch(source, event_type, body)


@pytest.fixture
def store(redis_client):
    return SlaStore(redis_client)


def start_watcher(service_container, policy_file):
    container = service_container(SlaWatcherService, TM_SLA_POLICY_FILE=policy_file)
    container.start()
    return container


def collect(listener, done, timeout=10.0):
    """Every (event_type, body, observed_at) the listener sees until ``done(seen)`` holds."""
    seen = []

    def predicate(event_type, body):
        seen.append((event_type, body, time.time()))
        return done(seen)

    listener.wait_for(predicate, timeout=timeout)
    return seen


def breached(ticket_id):
    return lambda seen: any(t == ev.SLA_BREACHED and b["ticket_id"] == ticket_id for t, b, _ in seen)


def test_warning_then_breach_fire_on_time_once_naming_the_assignee(service_container, tmp_path, publish,
                                                                     event_listener):
    container = start_watcher(service_container, tiny_policies(tmp_path))
    listener = event_listener(ev.SLA_WATCHER)
    with entrypoint_waiter(container, "handle_ticket_assigned", timeout=10):
        publish(ev.DISPATCHER, ev.TICKET_ASSIGNED, assigned("TM-1", "li.na"))
    received_at = time.time()
    with entrypoint_waiter(container, "handle_ticket_classified", timeout=10):
        publish(ev.DISPATCHER, ev.TICKET_CLASSIFIED, classified("TM-1", received_at))
    with entrypoint_waiter(container, "handle_ticket_classified", timeout=10):
        publish(ev.DISPATCHER, ev.TICKET_CLASSIFIED, classified("TM-1", received_at))  # redelivered
    publish(ev.DISPATCHER, ev.TICKET_CLASSIFIED, classified("TM-marker", received_at + 0.3))

    seen = collect(listener, breached("TM-marker"))
    mine = [(t, b, when) for t, b, when in seen if b["ticket_id"] == "TM-1" and t != ev.TICKET_ESCALATED]
    assert [t for t, _, _ in mine] == [ev.SLA_WARNING, ev.SLA_BREACHED]
    (_, warning, warned_at), (_, breach, breached_at) = mine
    assert warning["elapsed_fraction"] == 0.5 and warning["agent_id"] == "li.na"
    assert breach["agent_id"] == "li.na" and breach["policy"] == "tiny" and breach["target_seconds"] == 1
    assert datetime.fromisoformat(breach["due_at"]).timestamp() == pytest.approx(received_at + 1, abs=1e-3)
    assert breach["trace_id"] == "trace-TM-1" and breach["clock"] == FIRST_RESPONSE
    assert 0 <= warned_at - (received_at + 0.5) < FIRE_TOLERANCE_SECONDS
    assert 0 <= breached_at - (received_at + 1) < FIRE_TOLERANCE_SECONDS


def test_reply_or_resolution_before_due_fires_nothing(service_container, tmp_path, publish, store, event_listener):
    container = start_watcher(service_container, tiny_policies(tmp_path))
    listener = event_listener(ev.SLA_WATCHER)
    received_at = time.time()
    for ticket_id in ("TM-replied", "TM-resolved"):
        with entrypoint_waiter(container, "handle_ticket_classified", timeout=10):
            publish(ev.DISPATCHER, ev.TICKET_CLASSIFIED, classified(ticket_id, received_at))
    with entrypoint_waiter(container, "handle_agent_replied", timeout=10):
        publish(ev.AGENT_DESK, ev.AGENT_REPLIED, replied("TM-replied"))
    with entrypoint_waiter(container, "handle_ticket_resolved", timeout=10):
        publish(ev.AGENT_DESK, ev.TICKET_RESOLVED, resolved("TM-resolved"))
    # A marker falling due after both: everything they could fire would arrive before it.
    publish(ev.DISPATCHER, ev.TICKET_CLASSIFIED, classified("TM-marker", received_at + 0.1))

    seen = collect(listener, breached("TM-marker"))
    assert {b["ticket_id"] for _, b, _ in seen} == {"TM-marker"}
    assert store.clock("TM-replied", FIRST_RESPONSE).state == "fulfilled"
    assert store.clock("TM-resolved", FIRST_RESPONSE).state == "stopped"


def test_reply_before_classification_means_no_clock(service_container, tmp_path, publish, store, event_listener):
    container = start_watcher(service_container, tiny_policies(tmp_path))
    listener = event_listener(ev.SLA_WATCHER)
    with entrypoint_waiter(container, "handle_agent_replied", timeout=10):
        publish(ev.AGENT_DESK, ev.AGENT_REPLIED, replied("TM-early"))
    received_at = time.time()
    with entrypoint_waiter(container, "handle_ticket_classified", timeout=10):
        publish(ev.DISPATCHER, ev.TICKET_CLASSIFIED, classified("TM-early", received_at))
    publish(ev.DISPATCHER, ev.TICKET_CLASSIFIED, classified("TM-marker", received_at + 0.1))
    seen = collect(listener, breached("TM-marker"))
    assert {b["ticket_id"] for _, b, _ in seen} == {"TM-marker"}


def test_items_overdue_before_start_fire_once_in_due_order(service_container, store, event_listener):
    now = time.time()
    for ticket_id, received_at, target, warn_at in [
        ("TM-1", now - 100, 10, [0.5]),   # due -95, -90
        ("TM-2", now - 50, 10, [0.5]),    # due -45, -40
        ("TM-3", now - 200, 60, [0.8]),   # due -152, -140
    ]:
        store.start_clock(ticket_id=ticket_id, clock=FIRST_RESPONSE, policy="old", target_seconds=target,
                          received_at=received_at, trace_id=f"trace-{ticket_id}",
                          items=due_items(ticket_id, FIRST_RESPONSE, received_at=received_at,
                                          target_seconds=target, warn_at=warn_at))
    listener = event_listener(ev.SLA_WATCHER)
    start_watcher(service_container, str(DEFAULT_POLICIES))

    seen = collect(listener, lambda s: len(s) == 9)  # each breach is followed by its escalation
    assert [(t, b["ticket_id"]) for t, b, _ in seen] == [
        (ev.SLA_WARNING, "TM-3"), (ev.SLA_BREACHED, "TM-3"), (ev.TICKET_ESCALATED, "TM-3"),
        (ev.SLA_WARNING, "TM-1"), (ev.SLA_BREACHED, "TM-1"), (ev.TICKET_ESCALATED, "TM-1"),
        (ev.SLA_WARNING, "TM-2"), (ev.SLA_BREACHED, "TM-2"), (ev.TICKET_ESCALATED, "TM-2"),
    ]
    poll_until(lambda: store.due_members() == [])  # released once fired: nothing left to fire again


def test_two_replicas_fire_each_item_exactly_once(service_container, tmp_path, store, event_listener):
    policy_file = tiny_policies(tmp_path)
    start_watcher(service_container, policy_file)
    start_watcher(service_container, policy_file)
    listener = event_listener(ev.SLA_WATCHER)
    now = time.time()
    tickets = [f"TM-{n}" for n in range(40)]
    for n, ticket_id in enumerate(tickets + ["TM-marker"]):
        received_at = now - 0.5 + n * 0.01 + (1.0 if ticket_id == "TM-marker" else 0)
        store.start_clock(ticket_id=ticket_id, clock=FIRST_RESPONSE, policy="tiny", target_seconds=1,
                          received_at=received_at, trace_id=f"trace-{ticket_id}",
                          items=due_items(ticket_id, FIRST_RESPONSE, received_at=received_at,
                                          target_seconds=1, warn_at=[0.5]))

    seen = collect(listener, breached("TM-marker"), timeout=15)
    fired = [(b["ticket_id"], t) for t, b, _ in seen if b["ticket_id"] != "TM-marker"]
    kinds = (ev.SLA_WARNING, ev.SLA_BREACHED, ev.TICKET_ESCALATED)
    assert len(fired) == 3 * len(tickets)
    assert set(fired) == {(t, kind) for t in tickets for kind in kinds}
    assert len({b["event_id"] for _, b, _ in seen}) == len(seen)


@pytest.mark.parametrize("escalate", [True, False])
def test_a_breach_escalates_once_unless_the_policy_says_not_to(service_container, tmp_path, publish, event_listener,
                                                             escalate):
    container = start_watcher(service_container, tiny_policies(tmp_path, escalate_on_breach=escalate))
    listener = event_listener(ev.SLA_WATCHER)
    received_at = time.time()
    for _ in range(2):  # a redelivered classification starts nothing twice
        with entrypoint_waiter(container, "handle_ticket_classified", timeout=10):
            publish(ev.DISPATCHER, ev.TICKET_CLASSIFIED, classified("TM-1", received_at))
    publish(ev.DISPATCHER, ev.TICKET_CLASSIFIED, classified("TM-marker", received_at + 0.5))

    seen = collect(listener, breached("TM-marker"))
    escalations = [b for t, b, _ in seen if t == ev.TICKET_ESCALATED and b["ticket_id"] == "TM-1"]
    if not escalate:
        assert escalations == []
        return
    assert len(escalations) == 1
    (escalation,) = escalations
    assert escalation["level"] == 1 and escalation["policy"] == "tiny" and escalation["clock"] == FIRST_RESPONSE
    assert escalation["to_tier"] is None and "missed" in escalation["reason"]
    assert escalation["trace_id"] == "trace-TM-1"


def test_an_unassigned_agent_is_no_longer_named_by_the_clock(service_container, tmp_path, publish, store):
    container = start_watcher(service_container, tiny_policies(tmp_path, target=3600))
    with entrypoint_waiter(container, "handle_ticket_classified", timeout=10):
        publish(ev.DISPATCHER, ev.TICKET_CLASSIFIED, classified("TM-1", time.time()))
    with entrypoint_waiter(container, "handle_ticket_assigned", timeout=10):
        publish(ev.DISPATCHER, ev.TICKET_ASSIGNED, assigned("TM-1", "li.na"))
    with entrypoint_waiter(container, "handle_ticket_unassigned", timeout=10):
        publish(ev.DISPATCHER, ev.TICKET_UNASSIGNED, unassigned("TM-1", "li.na"))
    assert store.clock("TM-1", FIRST_RESPONSE).agent_id is None

    # An unassignment that arrives after the next holder's assignment leaves that holder named.
    with entrypoint_waiter(container, "handle_ticket_assigned", timeout=10):
        publish(ev.DISPATCHER, ev.TICKET_ASSIGNED, assigned("TM-1", "chen.wei"))
    with entrypoint_waiter(container, "handle_ticket_unassigned", timeout=10):
        publish(ev.DISPATCHER, ev.TICKET_UNASSIGNED, unassigned("TM-1", "li.na"))
    assert store.clock("TM-1", FIRST_RESPONSE).agent_id == "chen.wei"
