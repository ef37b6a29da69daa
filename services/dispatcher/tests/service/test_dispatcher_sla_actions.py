"""The dispatcher acting on SLA escalation ladder rungs (ticket_escalated actions) against real
Redis: raise_priority re-orders queued tickets, reassign_next_tier climbs once per escalation
event (a ticket may breach more than one clock), notify_* actions are left to the notifier."""
from dataclasses import replace
from datetime import datetime, timezone

from services.dispatcher.tests.service.test_dispatcher_races import T0, agent, facts, mesh  # noqa: F401 (fixture)
from shared import events as ev


def escalation(ticket_id, action, *, clock="first_response", level=1, to_priority=None, event_id=None):
    fields = {"event_id": event_id} if event_id else {}
    return ev.TicketEscalated.model_validate(ev.make_event(
        ev.SLA_WATCHER, ev.TICKET_ESCALATED, now=datetime.fromtimestamp(T0, timezone.utc),
        trace_id=f"trace-{ticket_id}", ticket_id=ticket_id, clock=clock, policy="P3", level=level,
        reason="late", action=action, to_priority=to_priority, **fields))


def test_raise_priority_moves_a_queued_ticket_up_both_its_queues_and_never_down(mesh):  # noqa: F811
    _, x, _ = mesh([agent("a")])
    for ticket_id, priority in (("T-1", "P3"), ("T-2", "P3"), ("T-3", "P2")):
        # Nobody has the technical skill: they wait.
        waiting = replace(facts(ticket_id), priority=priority, required_skills=("technical",))
        assert x.assigner.receive(waiting) == "queued"
    requirement = x.store.ticket("T-2").facts.requirement_key()
    assert x.store.waiting_page(None, limit=10)[0] == ["T-3", "T-1", "T-2"]

    assert x.assigner.escalate(escalation("T-2", "raise_priority", to_priority="P1")) == "raised"
    assert x.store.ticket("T-2").facts.priority == "P1"
    assert x.store.waiting_page(None, limit=10)[0] == ["T-2", "T-3", "T-1"]
    assert [t for t, _, _ in x.store.queue_heads([requirement], 10)] == ["T-2", "T-3", "T-1"]
    # Already as urgent, or less urgent: nothing changes.
    assert x.assigner.escalate(escalation("T-2", "raise_priority", to_priority="P1")) == "already_at_priority"
    assert x.assigner.escalate(escalation("T-3", "raise_priority", to_priority="P4")) == "already_at_priority"
    assert x.store.waiting_page(None, limit=10)[0] == ["T-2", "T-3", "T-1"]
    assert x.events == [e for e in x.events if e[0] != ev.TICKET_ASSIGNED]


def test_a_redelivered_raise_priority_raises_nothing_again(mesh):  # noqa: F811
    """After a reopen the ticket is routed at its own priority again: the old escalation,
    redelivered, must not raise it a second time (one marker per escalation event)."""
    _, x, _ = mesh([agent("a")])
    assert x.assigner.receive(replace(facts("T-1"), priority="P3", required_skills=("technical",))) == "queued"
    assert x.assigner.escalate(escalation("T-1", "raise_priority", to_priority="P1", event_id="esc-1")) == "raised"
    x.store.client.hset(x.store.ticket_key("T-1"), "priority", "P3")  # as a reopen leaves it
    assert x.assigner.escalate(escalation("T-1", "raise_priority", to_priority="P1", event_id="esc-1")) == "duplicate"
    assert x.store.ticket("T-1").facts.priority == "P3"
    assert x.assigner.escalate(escalation("T-1", "raise_priority", to_priority="P1", event_id="esc-2")) == "raised"


def test_notify_actions_are_not_for_routing(mesh):  # noqa: F811
    _, x, _ = mesh([agent("a"), agent("b", tier="L2")])
    x.assigner.receive(facts("T-1"))
    before = x.store.ticket("T-1")
    for action in ("notify_assignee", "notify_supervisor", "notify_duty_manager"):
        assert x.assigner.escalate(escalation("T-1", action)) == "not_for_routing"
    after = x.store.ticket("T-1")
    assert (after.agent_id, after.facts.tiers, after.escalation_level) == (before.agent_id, ("L1",), 0)


def test_each_breached_clock_climbs_a_tier_once(mesh):  # noqa: F811
    _, x, _ = mesh([agent("a"), agent("b", tier="L2"), agent("c", tier="duty_manager")])
    x.assigner.receive(facts("T-1"))
    assert x.store.ticket("T-1").agent_id == "a"
    first = escalation("T-1", "reassign_next_tier", clock="first_response", event_id="fr-breach")
    assert x.assigner.escalate(first) == "assigned"
    assert (x.store.ticket("T-1").agent_id, x.store.ticket("T-1").facts.tiers) == ("b", ("L2",))
    assert x.assigner.escalate(first) == "duplicate"   # redelivered: no second climb
    assert x.store.ticket("T-1").agent_id == "b"
    # The resolution clock breaches later, also at level 1 of its ladder: a climb of its own.
    later = escalation("T-1", "reassign_next_tier", clock="resolution", event_id="res-breach")
    assert x.assigner.escalate(later) == "assigned"
    after = x.store.ticket("T-1")
    assert (after.agent_id, after.facts.tiers, after.escalation_level) == ("c", ("duty_manager",), 1)
    assert [b["reason"] for b in x.of(ev.TICKET_UNASSIGNED)] == ["escalated", "escalated"]
