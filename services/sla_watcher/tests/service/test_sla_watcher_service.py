"""The SLA watcher in nameko containers against a real RabbitMQ vhost and Redis database: clock
lifecycles driven by ticket events, warnings, breaches and the escalation ladder."""
import time
from datetime import datetime

import pytest
from nameko.standalone.events import event_dispatcher
from nameko.testing.services import entrypoint_waiter

from services.sla_watcher.clocks import FIRST_RESPONSE, NEXT_RESPONSE, RESOLUTION
from services.sla_watcher.store import SlaStore
from services.sla_watcher.tests.service.support import (assigned, breached, changes, classified, collect, message, of,
                                                        received, reopened, replied, resolved, start_watcher, status,
                                                        tiny_policies, unassigned, write_policies)
from shared import events as ev

FIRE_TOLERANCE_SECONDS = 1.0
SLOW_TARGET = 8  # seconds: room for a loaded machine to handle a test's events before the clock is due


@pytest.fixture
def publish(amqp_uri):
    dispatch = event_dispatcher({"AMQP_URI": amqp_uri})
    return lambda source, event_type, body: dispatch(source, event_type, body)


@pytest.fixture
def store(redis_client):
    return SlaStore(redis_client)


def clock_breached(ticket_id):
    return lambda seen: any(t == ev.SLA_CLOCK_CHANGED and b["ticket_id"] == ticket_id and b["change"] == "breached"
                            for t, b, _ in seen)


def handled(container, publish, entrypoint, source, event_type, body):
    with entrypoint_waiter(container, entrypoint, timeout=10):
        publish(source, event_type, body)


def test_warning_then_breach_fire_on_time_once_naming_the_assignee(service_container, tmp_path, publish,
                                                                     event_listener):
    container = start_watcher(service_container, tiny_policies(tmp_path))
    listener = event_listener(ev.SLA_WATCHER)
    handled(container, publish, "handle_ticket_assigned", ev.DISPATCHER, ev.TICKET_ASSIGNED, assigned("TM-1", "li.na"))
    received_at = time.time()
    for _ in range(2):  # redelivered: starts nothing twice
        handled(container, publish, "handle_ticket_classified", ev.DISPATCHER, ev.TICKET_CLASSIFIED,
                classified("TM-1", received_at))
    publish(ev.DISPATCHER, ev.TICKET_CLASSIFIED, classified("TM-marker", received_at + 0.3))

    seen = collect(listener, breached("TM-marker"))
    mine = [(t, b, when) for t, b, when in seen if b["ticket_id"] == "TM-1" and t in (ev.SLA_WARNING, ev.SLA_BREACHED)]
    assert [t for t, _, _ in mine] == [ev.SLA_WARNING, ev.SLA_BREACHED]
    (_, warning, warned_at), (_, breach, breached_at) = mine
    assert warning["elapsed_fraction"] == 0.5 and warning["agent_id"] == "li.na"
    assert breach["agent_id"] == "li.na" and breach["policy"] == "tiny" and breach["target_seconds"] == 1
    assert datetime.fromisoformat(breach["due_at"]).timestamp() == pytest.approx(received_at + 1, abs=1e-3)
    assert breach["trace_id"] == "trace-TM-1" and breach["clock"] == FIRST_RESPONSE
    assert 0 <= warned_at - (received_at + 0.5) < FIRE_TOLERANCE_SECONDS
    assert 0 <= breached_at - (received_at + 1) < FIRE_TOLERANCE_SECONDS
    assert changes(seen, "TM-1", FIRST_RESPONSE) == [(FIRST_RESPONSE, "activated"), (FIRST_RESPONSE, "breached")]
    activated = next(b for t, b, _ in seen if t == ev.SLA_CLOCK_CHANGED and b["ticket_id"] == "TM-1")
    assert activated["calendar"] == "always" and activated["target_seconds"] == 1
    assert datetime.fromisoformat(activated["due_at"]).timestamp() == pytest.approx(received_at + 1, abs=1e-3)


def test_reply_or_resolution_before_due_fires_nothing(service_container, tmp_path, publish, store, event_listener):
    # Targets of a few seconds, not one: the reply and the resolution must be handled before the
    # first warning (half the target) even on a loaded machine, or the test races the sweep.
    container = start_watcher(service_container, tiny_policies(tmp_path, target=SLOW_TARGET, resolution=SLOW_TARGET))
    listener = event_listener(ev.SLA_WATCHER)
    received_at = time.time()
    for ticket_id in ("TM-replied", "TM-resolved"):
        handled(container, publish, "handle_ticket_classified", ev.DISPATCHER, ev.TICKET_CLASSIFIED,
                classified(ticket_id, received_at))
    handled(container, publish, "handle_agent_replied", ev.AGENT_DESK, ev.AGENT_REPLIED, replied("TM-replied"))
    handled(container, publish, "handle_ticket_resolved", ev.AGENT_DESK, ev.TICKET_RESOLVED, resolved("TM-resolved"))
    # A marker falling due after both: everything they could fire would arrive before it.
    publish(ev.DISPATCHER, ev.TICKET_CLASSIFIED, classified("TM-marker", received_at + 0.1))

    seen = collect(listener, breached("TM-marker"), timeout=SLOW_TARGET + 10)
    # TM-replied's resolution clock still runs (and breaches); its first response fired nothing.
    assert [b["clock"] for _, b in of(seen, "TM-replied", ev.SLA_WARNING, ev.SLA_BREACHED)] == [RESOLUTION] * 2
    assert not of(seen, "TM-resolved", ev.SLA_WARNING, ev.SLA_BREACHED, ev.TICKET_ESCALATED)
    assert (FIRST_RESPONSE, "fulfilled") in changes(seen, "TM-replied")
    assert set(changes(seen, "TM-resolved")) >= {(RESOLUTION, "fulfilled"), (FIRST_RESPONSE, "stopped")}
    assert store.clock("TM-replied", FIRST_RESPONSE).state == "fulfilled"
    assert store.clock("TM-replied", RESOLUTION).state == "running"
    assert store.clock("TM-resolved", FIRST_RESPONSE).state == "stopped"
    assert store.clock("TM-resolved", RESOLUTION).state == "fulfilled"


def test_reply_before_classification_means_no_clock(service_container, tmp_path, publish, event_listener):
    container = start_watcher(service_container, tiny_policies(tmp_path))
    listener = event_listener(ev.SLA_WATCHER)
    handled(container, publish, "handle_agent_replied", ev.AGENT_DESK, ev.AGENT_REPLIED, replied("TM-early"))
    received_at = time.time()
    handled(container, publish, "handle_ticket_classified", ev.DISPATCHER, ev.TICKET_CLASSIFIED,
            classified("TM-early", received_at))
    publish(ev.DISPATCHER, ev.TICKET_CLASSIFIED, classified("TM-marker", received_at + 0.1))
    seen = collect(listener, breached("TM-marker"))
    assert of(seen, "TM-early") == []


@pytest.mark.parametrize("escalate", [True, False])
def test_a_breach_escalates_once_unless_the_policy_says_not_to(service_container, tmp_path, publish, event_listener,
                                                             escalate):
    container = start_watcher(service_container, tiny_policies(tmp_path, escalate_on_breach=escalate))
    listener = event_listener(ev.SLA_WATCHER)
    received_at = time.time()
    for _ in range(2):
        handled(container, publish, "handle_ticket_classified", ev.DISPATCHER, ev.TICKET_CLASSIFIED,
                classified("TM-1", received_at))
    publish(ev.DISPATCHER, ev.TICKET_CLASSIFIED, classified("TM-marker", received_at + 0.5))

    seen = collect(listener, breached("TM-marker"))
    escalations = [b for t, b in of(seen, "TM-1", ev.TICKET_ESCALATED)]
    if not escalate:
        assert escalations == []
        return
    (escalation,) = escalations
    assert (escalation["level"], escalation["policy"], escalation["clock"]) == (1, "tiny", FIRST_RESPONSE)
    assert (escalation["action"], escalation["trigger"], escalation["to_tier"]) == ("reassign_next_tier", "breach",
                                                                                   None)
    assert "missed" in escalation["reason"] and escalation["trace_id"] == "trace-TM-1"


def test_a_breach_walks_the_policy_ladder_in_order(service_container, tmp_path, publish, event_listener):
    policy = write_policies(tmp_path / "sla.yaml", {
        "name": "ladder", "first_response": 1, "warn_at": [],
        "escalation": [{"after": 0, "action": "notify_supervisor"},
                       {"after": 0.5, "action": "raise_priority", "to": "P1"},
                       {"after": 1, "action": "reassign_next_tier", "to": "L2"},
                       {"after": 1.5, "action": "notify_duty_manager"}]})
    container = start_watcher(service_container, policy)
    listener = event_listener(ev.SLA_WATCHER)
    handled(container, publish, "handle_ticket_assigned", ev.DISPATCHER, ev.TICKET_ASSIGNED, assigned("TM-1", "li.na"))
    received_at = time.time()
    publish(ev.DISPATCHER, ev.TICKET_CLASSIFIED, classified("TM-1", received_at, priority="P3"))

    seen = collect(listener, lambda s: any(b.get("action") == "notify_duty_manager" for _, b, _ in s), timeout=15)
    rungs = [(b, when) for t, b, when in seen if t == ev.TICKET_ESCALATED]
    assert [(b["level"], b["action"], b["to_priority"], b["to_tier"]) for b, _ in rungs] == [
        (1, "notify_supervisor", None, None), (2, "raise_priority", "P1", None), (3, "reassign_next_tier", None, "L2"),
        (4, "notify_duty_manager", None, None)]
    assert all(b["agent_id"] == "li.na" and b["trigger"] == "breach" for b, _ in rungs)
    for (_, when), offset in zip(rungs, (1, 1.5, 2, 2.5)):
        assert 0 <= when - (received_at + offset) < FIRE_TOLERANCE_SECONDS
    assert len({b["event_id"] for b, _ in rungs}) == 4


def test_waiting_on_the_customer_pauses_resolution_and_their_message_resumes_it(service_container, tmp_path, publish,
                                                                                 store, event_listener):
    policy = write_policies(tmp_path / "sla.yaml", {"name": "res", "first_response": 3600, "resolution": 2,
                                                    "warn_at": [0.5]})
    container = start_watcher(service_container, policy)
    listener = event_listener(ev.SLA_WATCHER)
    t0 = time.time()
    handled(container, publish, "handle_ticket_classified", ev.DISPATCHER, ev.TICKET_CLASSIFIED, classified("TM-1", t0))
    # Paused at t0+0.2 (0.2 s used), resumed by the customer's message at t0+1.2: 1.8 s to go.
    handled(container, publish, "handle_ticket_status_changed", ev.AGENT_DESK, ev.TICKET_STATUS_CHANGED,
            status("TM-1", "waiting_on_customer", t0 + 0.2))
    paused = store.clock("TM-1", RESOLUTION)
    assert paused.state == "paused" and store.clock("TM-1", FIRST_RESPONSE).state == "running"
    handled(container, publish, "handle_email_message_received", ev.INTAKE_EMAIL, ev.MESSAGE_RECEIVED,
            message("TM-1", t0 + 1.2))
    # The older status change, redelivered after the message, does not pause it again.
    handled(container, publish, "handle_ticket_status_changed", ev.AGENT_DESK, ev.TICKET_STATUS_CHANGED,
            status("TM-1", "waiting_on_customer", t0 + 0.2))
    assert store.clock("TM-1", RESOLUTION).state == "running"

    seen = collect(listener, clock_breached("TM-1"))
    (_, warning), = of(seen, "TM-1", ev.SLA_WARNING)
    warned_at = next(when for t, b, when in seen if t == ev.SLA_WARNING)
    breached_at = next(when for t, b, when in seen if t == ev.SLA_BREACHED)
    assert 0 <= warned_at - (t0 + 2.0) < FIRE_TOLERANCE_SECONDS
    assert 0 <= breached_at - (t0 + 3.0) < FIRE_TOLERANCE_SECONDS
    assert datetime.fromisoformat(warning["due_at"]).timestamp() == pytest.approx(t0 + 3.0, abs=1e-3)
    assert changes(seen, "TM-1", RESOLUTION) == [(RESOLUTION, "activated"), (RESOLUTION, "paused"),
                                                 (RESOLUTION, "resumed"), (RESOLUTION, "breached")]
    resumed = next(b for t, b, _ in seen if t == ev.SLA_CLOCK_CHANGED and b["change"] == "resumed")
    assert resumed["business_seconds_used"] == pytest.approx(0.2, abs=1e-3)


def test_next_response_runs_from_a_customer_message_after_a_reply_to_the_next_reply(service_container, tmp_path,
                                                                                     publish, store, event_listener):
    # Cycle 1 falls due SLOW_TARGET - 2 s after the test starts: its reply is handled before that
    # even on a loaded machine (a due time already past would race the sweep); cycle 2 then breaches.
    policy = write_policies(tmp_path / "sla.yaml", {"name": "nr", "first_response": 3600, "next_response": SLOW_TARGET,
                                                    "warn_at": [], "escalate_on_breach": False})
    container = start_watcher(service_container, policy)
    listener = event_listener(ev.SLA_WATCHER)
    t0 = time.time()
    handled(container, publish, "handle_ticket_classified", ev.DISPATCHER, ev.TICKET_CLASSIFIED,
            classified("TM-1", t0 - 60))
    # The first customer message came with the ticket: no next-response clock before a reply.
    handled(container, publish, "handle_email_message_received", ev.INTAKE_EMAIL, ev.MESSAGE_RECEIVED,
            message("TM-1", t0 - 59, "m0"))
    assert store.clock("TM-1", NEXT_RESPONSE) is None
    handled(container, publish, "handle_agent_replied", ev.AGENT_DESK, ev.AGENT_REPLIED, replied("TM-1", t0 - 50))
    handled(container, publish, "handle_email_message_received", ev.INTAKE_EMAIL, ev.MESSAGE_RECEIVED,
            message("TM-1", t0 - 2, "m1"))
    assert store.clock("TM-1", NEXT_RESPONSE).cycle == 1
    handled(container, publish, "handle_agent_replied", ev.AGENT_DESK, ev.AGENT_REPLIED,
            replied("TM-1", t0 - 1.5, "r2"))
    assert store.clock("TM-1", NEXT_RESPONSE).state == "fulfilled"
    # Answered already: its redelivery starts nothing. A new message starts cycle 2, unanswered.
    handled(container, publish, "handle_email_message_received", ev.INTAKE_EMAIL, ev.MESSAGE_RECEIVED,
            message("TM-1", t0 - 2, "m1"))
    assert store.clock("TM-1", NEXT_RESPONSE).state == "fulfilled"
    handled(container, publish, "handle_email_message_received", ev.INTAKE_EMAIL, ev.MESSAGE_RECEIVED,
            message("TM-1", t0 - 1, "m2"))

    seen = collect(listener, clock_breached("TM-1"), timeout=SLOW_TARGET + 10)
    assert changes(seen, "TM-1", NEXT_RESPONSE) == [(NEXT_RESPONSE, "activated"), (NEXT_RESPONSE, "fulfilled"),
                                                    (NEXT_RESPONSE, "activated"), (NEXT_RESPONSE, "breached")]
    (_, breach), = of(seen, "TM-1", ev.SLA_BREACHED)
    assert breach["clock"] == NEXT_RESPONSE
    assert datetime.fromisoformat(breach["due_at"]).timestamp() == pytest.approx(t0 - 1 + SLOW_TARGET, abs=1e-3)
    assert store.clock("TM-1", NEXT_RESPONSE).cycle == 2


def test_a_reopen_soon_after_resolution_escalates_and_continues_resolution(service_container, tmp_path, publish,
                                                                           store, event_listener):
    policy = write_policies(tmp_path / "sla.yaml", {
        "name": "back", "first_response": 3600, "resolution": 3600, "reopen_escalation_hours": 1,
        "reopen_escalation": [{"action": "notify_supervisor"}, {"action": "raise_priority", "to": "P1"}]})
    container = start_watcher(service_container, policy)
    listener = event_listener(ev.SLA_WATCHER)
    t0 = time.time()
    handled(container, publish, "handle_ticket_classified", ev.DISPATCHER, ev.TICKET_CLASSIFIED,
            classified("TM-1", t0 - 100, priority="P3"))
    handled(container, publish, "handle_ticket_resolved", ev.AGENT_DESK, ev.TICKET_RESOLVED, resolved("TM-1", t0 - 40))
    for _ in range(2):  # redelivered: escalates once
        handled(container, publish, "handle_ticket_reopened", ev.AGENT_DESK, ev.TICKET_REOPENED,
                reopened("TM-1", t0 - 10))
    seen = collect(listener, lambda s: len(of(s, "TM-1", ev.TICKET_ESCALATED)) >= 2)
    escalations = [b for _, b in of(seen, "TM-1", ev.TICKET_ESCALATED)]
    assert [(b["trigger"], b["action"], b["to_priority"]) for b in escalations] == [
        ("reopen", "notify_supervisor", None), ("reopen", "raise_priority", "P1")]
    assert "30s after resolution" in escalations[0]["reason"]
    clock = store.clock("TM-1", RESOLUTION)
    assert clock.state == "running" and clock.used == pytest.approx(60)  # 60 s before the resolution
    assert (RESOLUTION, "resumed") in changes(seen, "TM-1")
    assert store.ticket("TM-1").resolved_at is None


def test_a_second_contact_soon_after_a_resolution_escalates_the_new_ticket(service_container, tmp_path, publish,
                                                                         event_listener):
    policy = write_policies(tmp_path / "sla.yaml", {"name": "back", "first_response": 3600,
                                                    "reopen_escalation_hours": 2})
    container = start_watcher(service_container, policy)
    listener = event_listener(ev.SLA_WATCHER, [ev.TICKET_ESCALATED])
    t0 = time.time()
    handled(container, publish, "handle_email_ticket_received", ev.INTAKE_EMAIL, ev.TICKET_RECEIVED,
            received("TM-1", t0 - 3000))
    handled(container, publish, "handle_ticket_classified", ev.DISPATCHER, ev.TICKET_CLASSIFIED,
            classified("TM-1", t0 - 3000))
    handled(container, publish, "handle_ticket_resolved", ev.AGENT_DESK, ev.TICKET_RESOLVED, resolved("TM-1", t0 - 600))
    # Someone else writes: nothing. The same customer again 10 min after: escalated, whichever
    # of its two events comes second.
    handled(container, publish, "handle_email_ticket_received", ev.INTAKE_EMAIL, ev.TICKET_RECEIVED,
            received("TM-2", t0, email="li.lei@example.com"))
    handled(container, publish, "handle_ticket_classified", ev.DISPATCHER, ev.TICKET_CLASSIFIED, classified("TM-2", t0))
    handled(container, publish, "handle_ticket_classified", ev.DISPATCHER, ev.TICKET_CLASSIFIED, classified("TM-3", t0))
    handled(container, publish, "handle_email_ticket_received", ev.INTAKE_EMAIL, ev.TICKET_RECEIVED,
            received("TM-3", t0, email="Zhang.Wei@example.com"))

    _, escalation = listener.wait_for(lambda t, b: True)
    assert (escalation["ticket_id"], escalation["trigger"], escalation["action"]) == ("TM-3", "second_contact",
                                                                                     "notify_supervisor")
    assert "TM-1" in escalation["reason"]


def test_an_unassigned_agent_is_no_longer_named(service_container, tmp_path, publish, store):
    container = start_watcher(service_container, tiny_policies(tmp_path, target=3600))
    handled(container, publish, "handle_ticket_classified", ev.DISPATCHER, ev.TICKET_CLASSIFIED,
            classified("TM-1", time.time()))
    handled(container, publish, "handle_ticket_assigned", ev.DISPATCHER, ev.TICKET_ASSIGNED, assigned("TM-1", "li.na"))
    handled(container, publish, "handle_ticket_unassigned", ev.DISPATCHER, ev.TICKET_UNASSIGNED,
            unassigned("TM-1", "li.na"))
    assert store.ticket("TM-1").agent_id is None

    # An unassignment that arrives after the next holder's assignment leaves that holder named.
    handled(container, publish, "handle_ticket_assigned", ev.DISPATCHER, ev.TICKET_ASSIGNED,
            assigned("TM-1", "chen.wei"))
    handled(container, publish, "handle_ticket_unassigned", ev.DISPATCHER, ev.TICKET_UNASSIGNED,
            unassigned("TM-1", "li.na"))
    assert store.ticket("TM-1").agent_id == "chen.wei"
