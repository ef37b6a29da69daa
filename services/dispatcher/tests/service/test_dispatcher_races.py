"""Interleavings of two dispatcher replicas (and stale or late desk events) against real Redis.

Each test replays one interleaving a review found: replica X reads something, replica Y (or
another handler) changes the ticket, then X acts on what it read. X's stale read is replayed
by handing X's store the value it read earlier; everything else is the real store and scripts.
"""
import json
from datetime import datetime, timezone

import pytest
from nameko.testing.services import entrypoint_waiter

from services.dispatcher.assigner import Assigner
from services.dispatcher.policy import RelaxStep, RoutingPolicy
from services.dispatcher.store import DispatchStore, TicketFacts
from services.dispatcher.tests.service.test_dispatcher_service import (
    NOW,
    PASSWORD_HASH,
    collect,
    go_online,
    of,
    received,
    register,
    start_dispatcher,
    write_roster,
)
from shared import events as ev
from shared.roster import AgentProfile

T0 = 1_900_000_000.0


class Replica:
    """One dispatcher replica: its own store object (scripts, roster cache) on the shared Redis."""

    def __init__(self, client, policy, clock):
        self.store = DispatchStore(client, policy)
        self.events: list[tuple[str, dict]] = []
        self.assigner = Assigner(self.store, self._emit, lambda: datetime.fromtimestamp(clock[0], timezone.utc),
                                 policy)

    def _emit(self, event_type, /, *, now, trace_id, **fields):
        body = ev.make_event(ev.DISPATCHER, event_type, now=now, trace_id=trace_id, **fields)
        self.events.append((event_type, body))
        return body

    def of(self, event_type):
        return [b for t, b in self.events if t == event_type]


def agent(agent_id, *, tier="L1", group=None, capacity=None, role="agent"):
    return AgentProfile(agent_id=agent_id, name=agent_id, password_hash=PASSWORD_HASH, skills={"billing": 3},
                        languages=["zh"], capacity=capacity or {"email": 5}, tier=tier, group=group, role=role)


def facts(ticket_id, **extra):
    return TicketFacts(ticket_id=ticket_id, trace_id=f"trace-{ticket_id}", channel="email", priority="P3",
                       required_skills=("billing",), language="zh", tags=(),
                       received_at=datetime.fromtimestamp(T0, timezone.utc), **extra)


@pytest.fixture
def mesh(redis_client):
    """``mesh(agents, **policy)`` -> (clock, replica X, replica Y); every agent online."""
    def make(agents, **policy_fields):
        clock = [T0]
        policy = RoutingPolicy(**policy_fields)
        x, y = Replica(redis_client, policy, clock), Replica(redis_client, policy, clock)
        x.store.load_roster(agents)
        for a in agents:
            x.store.set_presence(a.agent_id, "online", at=1.0)
        return clock, x, y
    return make


def replay_stale_read(replica, record):
    """``replica``'s next ticket read returns ``record`` (what it read before the other replica
    acted); later reads are real. Returns the real reader."""
    reads = iter([record])
    real = replica.store.ticket
    replica.store.ticket = lambda ticket_id: next(reads, None) or real(ticket_id)
    return real


def escalated(ticket_id, level=1):
    return ev.make_event(ev.SLA_WATCHER, ev.TICKET_ESCALATED, now=datetime.fromtimestamp(T0, timezone.utc),
                         trace_id=f"trace-{ticket_id}", ticket_id=ticket_id, clock="first_response", policy="P3",
                         level=level, reason="late")


def transfer(ticket_id, by, *, kind="transfer", to_agent_id=None, to_group=None, event_id="tr-1"):
    return ev.TicketTransferRequested.model_validate(ev.make_event(
        ev.AGENT_DESK, ev.TICKET_TRANSFER_REQUESTED, now=datetime.fromtimestamp(T0, timezone.utc),
        trace_id=f"trace-{ticket_id}", event_id=event_id, ticket_id=ticket_id, requested_by=by, kind=kind,
        to_agent_id=to_agent_id, to_group=to_group, reason="please"))


def test_a_replica_with_a_stale_due_list_never_expires_a_fresh_offer(mesh):
    clock, x, y = mesh([agent("a"), agent("b")], offer_timeout_seconds=60)
    y.assigner.receive(facts("T-1"))
    first = y.store.ticket("T-1")
    clock[0] += 61
    stale_due = x.store.due_offers(clock[0])  # X reads the due list ...
    assert stale_due == [("T-1", first.offer_expires_at)]
    assert y.assigner.expire_offers() == 1  # ... Y expires it and offers it to the other agent
    fresh = y.store.ticket("T-1")
    assert fresh.agent_id != first.agent_id and fresh.offer_expires_at == clock[0] + 60

    x.store.due_offers = lambda now, limit=100: stale_due  # ... and X goes on with what it read
    assert x.assigner.expire_offers() == 0
    after = x.store.ticket("T-1")
    assert (after.state, after.agent_id, after.attempt) == ("assigned", fresh.agent_id, 2)
    assert fresh.agent_id not in after.declined
    # The expiry script refuses an offer that is not due, whatever the caller read.
    assert x.store.expire_offer("T-1", fresh.agent_id, repr(fresh.offer_expires_at), now=clock[0], score=1.0,
                                relax_due=None, requirement="r").status == "not_due"
    assert y.store.due_offers(fresh.offer_expires_at) == [("T-1", fresh.offer_expires_at)]


def test_a_replica_reading_between_the_expiry_and_the_new_offer_keeps_the_new_offer_timed(mesh):
    clock, x, y = mesh([agent("a"), agent("b")], offer_timeout_seconds=60)
    y.assigner.receive(facts("T-1"))
    first = y.store.ticket("T-1")
    clock[0] += 61
    stale_due = x.store.due_offers(clock[0])
    # Y expires the offer; X reads the ticket while it is back in the queue; Y offers it again.
    assert y.store.expire_offer("T-1", first.agent_id, repr(first.offer_expires_at), now=clock[0],
                                score=first.facts.queue_score(), relax_due=None,
                                requirement=first.facts.requirement_key()).done
    queued = x.store.ticket("T-1")
    assert y.assigner.reroute("T-1", step="requeue").status == "assigned"
    fresh = y.store.ticket("T-1")

    x.store.due_offers = lambda now, limit=100: stale_due
    x.store.ticket = lambda ticket_id: queued
    assert x.assigner.expire_offers() == 0
    assert y.store.due_offers(fresh.offer_expires_at) == [("T-1", fresh.offer_expires_at)]


def test_a_drain_that_read_a_ticket_before_its_escalation_cannot_give_it_to_an_l1_agent(mesh):
    clock, x, y = mesh([agent("junior"), agent("senior", tier="L2")])
    y.store.set_presence("junior", "offline", at=2.0)
    y.store.set_presence("senior", "away", at=2.0)
    assert y.assigner.receive(facts("T-1")) == "queued"
    before = x.store.ticket("T-1")  # X's drain reads the queued ticket ...
    assert y.assigner.escalate(ev.TicketEscalated.model_validate(escalated("T-1"))) == "queued"  # ... Y escalates
    x.store.set_presence("junior", "online", at=3.0)

    junior = x.store.agent_snapshot("junior", clock[0])
    attempt = x.assigner._offer(before, [junior], lambda what: None, step="requeue")
    assert attempt.status == "stale"
    after = x.store.ticket("T-1")
    assert (after.state, after.facts.tiers) == ("queued", ("L2",))
    # The claim itself compares what the caller read with the ticket as it is.
    result = x.store.claim("T-1", "junior", "email", now=clock[0], decision={}, requirement=before.requirement_stamp)
    assert (result.status, x.store.ticket("T-1").state) == ("stale", "queued")

    # Routing from the stale read re-reads the ticket and ranks it again: the L2 agent gets it.
    y.store.set_presence("senior", "online", at=4.0)
    assert x.assigner._offer_best(before, lambda what: None, step="requeue").agent_id == "senior"
    assert x.store.ticket("T-1").agent_id == "senior"


def test_an_escalation_lands_even_when_the_offer_ended_after_it_was_read(mesh):
    clock, x, y = mesh([agent("junior"), agent("senior", tier="L2")], offer_timeout_seconds=60)
    y.store.set_presence("senior", "away", at=2.0)
    y.assigner.receive(facts("T-1"))
    held = x.store.ticket("T-1")
    assert held.agent_id == "junior"
    clock[0] += 61
    assert y.assigner.expire_offers() == 1  # the offer runs out after X read the ticket

    real = replay_stale_read(x, held)
    x.assigner.escalate(ev.TicketEscalated.model_validate(escalated("T-1")))
    after = real("T-1")
    assert (after.state, after.facts.tiers, after.escalation_level) == ("queued", ("L2",), 1)
    assert x.store.requirements_waiting() == [after.facts.requirement_key()]


def test_an_escalation_read_while_queued_is_not_lost_when_a_drain_claims_the_ticket_first(mesh):
    clock, x, y = mesh([agent("junior"), agent("senior", tier="L2")])
    for name in ("junior", "senior"):
        y.store.set_presence(name, "away", at=2.0)
    assert y.assigner.receive(facts("T-1")) == "queued"
    waiting = x.store.ticket("T-1")
    y.store.set_presence("junior", "online", at=3.0)
    y.assigner.drain("junior", trigger="online:junior")  # claims it after X read it as queued
    assert real_holder(x, "T-1") == "junior"

    real = replay_stale_read(x, waiting)
    x.assigner.escalate(ev.TicketEscalated.model_validate(escalated("T-1")))
    after = real("T-1")
    # The L1 holder lost it to the escalation; nobody at L2 is online, so it waits at L2.
    assert (after.state, after.facts.tiers, after.escalation_level) == ("queued", ("L2",), 1)
    assert [b["reason"] for b in x.of(ev.TICKET_UNASSIGNED)] == ["escalated"]


def real_holder(replica, ticket_id):
    record = replica.store.ticket(ticket_id)
    return record.agent_id if record and record.state == "assigned" else None


def test_a_group_transfer_lands_even_when_the_offer_ended_after_it_was_read(mesh):
    clock, x, y = mesh([agent("a", group="billing"), agent("boss", role="supervisor", capacity={"email": 1}),
                        agent("v", group="vip")], offer_timeout_seconds=60)
    y.store.set_presence("v", "away", at=2.0)
    y.store.set_presence("boss", "away", at=2.0)
    y.assigner.receive(facts("T-1", group="billing"))
    held = x.store.ticket("T-1")
    assert held.agent_id == "a"
    clock[0] += 61
    y.store.set_presence("a", "away", at=3.0)
    assert y.assigner.expire_offers() == 1

    real = replay_stale_read(x, held)
    assert x.assigner.transfer(transfer("T-1", "boss", kind="reassign", to_group="vip")) == "queued"
    after = real("T-1")
    assert (after.state, after.facts.group) == ("queued", "vip")
    assert x.store.requirements_waiting() == [after.facts.requirement_key()]


def test_accept_and_decline_act_only_on_the_offer_they_answer(mesh):
    clock, x, y = mesh([agent("a"), agent("b")], offer_timeout_seconds=60)
    y.store.set_presence("b", "away", at=2.0)
    x.assigner.receive(facts("T-1"))
    assert x.store.ticket("T-1").agent_id == "a"
    assert x.assigner.accept("T-1", "a", attempt=2) == "stale"  # not the offer it answers
    assert x.store.ticket("T-1").accepted_by is None
    assert x.assigner.accept("T-1", "a", attempt=1) == "accepted"

    # A stale or redelivered decline never takes back an accepted ticket, with or without attempt.
    assert x.assigner.decline("T-1", "a", "old", attempt=1) == "accepted"
    assert x.assigner.decline("T-1", "a", "old") == "accepted"
    after = x.store.ticket("T-1")
    assert (after.state, after.agent_id, after.declined) == ("assigned", "a", {})

    # A decline of an earlier offer leaves a later offer to the same agent alone.
    x.assigner.receive(facts("T-2"))
    assert x.assigner.decline("T-2", "a", "busy", attempt=1) == "unassigned"
    x.store.set_presence("a", "offline", at=3.0)
    x.store.set_presence("a", "online", at=4.0)
    clock[0] += 901  # the decline cooldown ran out: the sweep offers it to a again (attempt 2)
    assert x.assigner.sweep_queues() == 1 and x.store.ticket("T-2").attempt == 2
    assert x.assigner.decline("T-2", "a", "busy", attempt=1) == "stale"
    assert x.store.ticket("T-2").state == "assigned"
    assert x.assigner.decline("T-2", "a", "busy", attempt=2) == "unassigned"


def test_an_agents_transfer_respects_the_targets_capacity_and_a_supervisors_reassign_does_not(mesh):
    clock, x, y = mesh([agent("a", capacity={"email": 5}), agent("c", capacity={"email": 1}),
                        agent("boss", role="supervisor")])
    y.store.set_presence("boss", "away", at=2.0)
    x.store.set_presence("a", "away", at=2.0)
    x.assigner.receive(facts("T-1"))
    assert x.store.ticket("T-1").agent_id == "c"  # c is now full
    x.store.set_presence("a", "online", at=3.0)
    x.assigner.receive(facts("T-2"))
    assert x.store.ticket("T-2").agent_id == "a"

    assert x.assigner.transfer(transfer("T-2", "a", to_agent_id="c")) == "rejected"
    [outcome] = x.of(ev.TICKET_TRANSFERRED)
    assert outcome["outcome"] == "rejected" and outcome["detail"] == "c cannot take it now: capacity: email full (1/1)"
    assert x.store.ticket("T-2").agent_id == "a" and x.store.load_of("c", "email") == 1
    assert x.store.load_of("a", "email") == 1 and not x.of(ev.TICKET_UNASSIGNED)

    assert x.assigner.transfer(transfer("T-2", "boss", kind="reassign", to_agent_id="c", event_id="tr-2")) == "assigned"
    assert x.store.ticket("T-2").agent_id == "c" and x.store.load_of("c", "email") == 2


def test_every_unassignment_is_announced_even_when_a_second_follows_before_the_first_went_out(mesh):
    clock, x, y = mesh([agent("a"), agent("b")])
    register(x.store, facts("T-1"))
    now = clock[0]
    score = facts("T-1").queue_score()
    assert x.store.claim("T-1", "a", "email", now=now, decision={}).assigned
    assert x.store.unassign("T-1", "a", "declined", now=now, score=score, by="a", declined=True).done
    assert x.store.claim("T-1", "b", "email", now=now + 1, decision={}).assigned
    assert x.store.unassign("T-1", "b", "declined", now=now + 1, score=score, by="b", declined=True).done

    clock[0] += 10
    x.assigner.announce_orphaned_claims()
    sent = [(b["agent_id"], b["event_id"]) for b in x.of(ev.TICKET_UNASSIGNED)]
    assert [a for a, _ in sent] == ["a", "b"] and len({i for _, i in sent}) == 2
    assert x.store.unassignments_before(clock[0]) == []
    x.assigner.announce_orphaned_claims()
    assert len(x.of(ev.TICKET_UNASSIGNED)) == 2


def test_dropping_the_last_ticket_of_a_queue_unregisters_the_queue(mesh):
    clock, x, y = mesh([agent("a")])
    x.store.set_presence("a", "offline", at=2.0)
    assert x.assigner.receive(facts("T-1")) == "queued"
    requirement = facts("T-1").requirement_key()
    assert x.store.requirements_waiting() == [requirement]
    x.store.drop_from_queue(requirement, "T-1")  # read as gone, but queued there again (a reopen): stays
    assert x.store.requirements_waiting() == [requirement] and x.store.waiting_ids() == ["T-1"]
    x.store.client.delete(x.store.ticket_key("T-1"))  # its record expired
    x.store.drop_from_queue(requirement, "T-1")
    assert x.store.requirements_waiting() == [] and x.store.waiting_ids() == []


def test_a_reopened_ticket_routes_with_its_original_classification(mesh):
    clock, x, y = mesh([agent("senior", tier="L2")], relaxation=(
        RelaxStep(1, "widen_group"), RelaxStep(2, "next_tier")))
    original = facts("T-1", preferred_skills=("vip",))
    assert x.assigner.receive(original) == "queued"
    clock[0] += 3
    while x.assigner.relax_waiting():
        clock[0] += 3
    relaxed = x.store.ticket("T-1")
    assert (relaxed.state, relaxed.agent_id, relaxed.facts.required_skills) == ("assigned", "senior", ())
    x.store.resolve("T-1", now=clock[0])

    x.store.set_presence("senior", "offline", at=2.0)
    reopened = ev.TicketReopened.model_validate(ev.make_event(
        ev.AGENT_DESK, ev.TICKET_REOPENED, now=datetime.fromtimestamp(clock[0], timezone.utc),
        trace_id="trace-T-1", ticket_id="T-1", by="customer", agent_id="senior", channel="email"))
    assert x.assigner.reopen(reopened) == "reopened"
    after = x.store.ticket("T-1")
    assert (after.facts.required_skills, after.facts.tiers, after.facts.preferred_skills) == (
        ("billing",), ("L1",), ("vip",))
    assert x.store.requirements_waiting() == [original.requirement_key()]
    assert json.loads(x.store.client.hget(x.store.ticket_key("T-1"), "required_skills")) == ["billing"]


def test_the_service_passes_the_attempt_of_an_accept_or_decline(service_container, tmp_path, publish, store,
                                                                event_listener):
    container = start_dispatcher(service_container, write_roster(tmp_path, [{"agent_id": "li.na"}]))
    listener = event_listener(ev.DISPATCHER)
    go_online(publish, store, "li.na")
    publish(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, received("TM-1"))
    collect(listener, lambda seen: of(seen, ev.TICKET_ASSIGNED, "TM-1"))

    def desk(event_type, **fields):
        return ev.make_event(ev.AGENT_DESK, event_type, now=NOW, trace_id="trace-TM-1", ticket_id="TM-1",
                             agent_id="li.na", **fields)

    with entrypoint_waiter(container, "handle_ticket_accepted", timeout=10):
        publish(ev.AGENT_DESK, ev.TICKET_ACCEPTED, desk(ev.TICKET_ACCEPTED, attempt=2))
    assert store.ticket("TM-1").accepted_by is None
    with entrypoint_waiter(container, "handle_ticket_accepted", timeout=10):
        publish(ev.AGENT_DESK, ev.TICKET_ACCEPTED, desk(ev.TICKET_ACCEPTED, attempt=1))
    assert store.ticket("TM-1").accepted_by == "li.na"
    with entrypoint_waiter(container, "handle_ticket_declined", timeout=10):
        publish(ev.AGENT_DESK, ev.TICKET_DECLINED, desk(ev.TICKET_DECLINED, attempt=1, reason="late"))
    after = store.ticket("TM-1")
    assert (after.state, after.agent_id, after.declined) == ("assigned", "li.na", {})
