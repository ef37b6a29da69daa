"""Turning routing advice into assignments: claim in ranked order, queue, drain, move, announce.

The ranking (routing.py) is computed from a snapshot that may be stale by the time it is
used; the store's Lua claim is the authority. So the assigner walks the ranking until one
claim succeeds, and records an agent that lost its last slot to a concurrent claim as
rejected for that reason.

Announcements carry stable event ids: ``ticket_classified`` per ticket, ``ticket_assigned`` per
(ticket, agent, attempt), ``ticket_unassigned`` per (ticket, agent, attempt), ``ticket_queued``
per ticket and routing step, ``ticket_transferred`` per request. Claims and unassignments are
written to outboxes by the same script that makes them, and a timer announces what a worker
that died (or whose publish failed) left unannounced.

A ticket that finds no agent is queued, then offered once more from a fresh snapshot: an
agent who came online between the first snapshot and the enqueue has already run their drain
and would otherwise not see this ticket until the next event.

Offers: with ``offer_timeout_seconds`` > 0 an assignment is an offer until the agent accepts.
Declined or expired offers (and the unaccepted offers of an agent going away) free the
capacity, go back to the queue and are routed again, never to an agent who declined or let
it expire within ``decline_cooldown_seconds``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import partial
from typing import Any, Callable, Iterable, Mapping

from services.dispatcher.policy import DEFAULT_POLICY, RoutingPolicy
from services.dispatcher.routing import (
    CANDIDATES_REPORTED,
    ONLINE,
    AgentSnapshot,
    Ranking,
    Requirement,
    assigned_reason,
    next_tier,
    queued_reason,
    rank_agents,
    rejection_counts,
    tier_rank,
)
from services.dispatcher.store import (
    ANNOUNCED_ASSIGNED,
    ANNOUNCED_CLASSIFIED,
    ANNOUNCED_QUEUED,
    ASSIGNED,
    INDEX_PAGE_SIZE,
    PRIORITY_RANK,
    QUEUED,
    RESOLVED,
    DispatchStore,
    Received,
    Routing,
    TicketFacts,
    TicketRecord,
    facts_with,
)
from shared import events as ev
from shared import metrics
from shared.errors import TransientError
from shared.intake_ledger import stable_event_id
from shared.logging import get_logger

log = get_logger(__name__)

# A drain claims at most this many tickets for one agent, looking at this many tickets at the
# head of each queue the agent serves (more only matter if they declined all of those).
DRAIN_MAX_CLAIMS = 50
QUEUE_HEAD_DEPTH = 5
REJECTED_REPORT_LIMIT = 50  # the decision names at most this many filtered agents (counts cover the rest)
DRAIN_PAGE_SIZE = 100
# A claim this old without a confirmed ticket_assigned belongs to a worker that died mid-way
# (or whose publish failed); the service's timer re-announces such claims this often.
ANNOUNCE_GRACE_SECONDS = 2.0
# A claim that finds the ticket's requirements changed since they were read (an escalation or
# transfer meanwhile) re-reads the ticket and ranks again, at most this many times.
STALE_READ_RETRIES = 3
# An escalation or transfer whose ticket changed hands (or whose offer ended) between the read
# and the change starts over from a fresh read this many times, then is retried later.
CHANGED_RETRIES = 3

Emit = Callable[..., dict]
# Records that an announcement was confirmed by the broker (what: ANNOUNCED_*).
Mark = Callable[[str], None]


def _ignore(_what: str) -> None:
    return None


@dataclass(frozen=True)
class Attempt:
    status: str  # assigned | taken (someone else holds it) | none (no claim succeeded) | stale (the
    #              ticket's requirements changed since it was read: re-read before trying again)
    ranking: Ranking
    agent_id: str | None = None
    stale_snapshot: bool = False  # a claim saw presence/capacity differ from the snapshot
    decision: dict = field(default_factory=dict)
    attempt: int = 0
    offer_expires_at: float | None = None


class Assigner:
    def __init__(self, store: DispatchStore, emit: Emit, clock: Callable[[], datetime],
                 policy: RoutingPolicy = DEFAULT_POLICY):
        self.store = store
        self.emit = emit
        self.clock = clock
        self.policy = policy
        self._routing: Routing | None = None  # the received ticket this (per-worker) assigner routes

    def _now(self) -> float:
        return self.clock().timestamp()

    # received tickets
    def receive(self, facts: TicketFacts, *, complaint: bool = False, received: Received | None = None) -> str:
        """Route a received ticket once; returns what happened (for the log). The customer's
        history notes the ticket (``complaint``: it counts as one) in the lease's last round trip.
        ``received``: its first round trip (``DispatchStore.receive``), lease taken."""
        with self.store.routing(facts, now=self._now(), received=received) as routing:
            routing.later.append(partial(self.store.queue_customer_ticket, facts=facts,
                                         ticket_id=facts.ticket_id, received=facts.received_at.timestamp(),
                                         complaint=complaint, scripted=True))
            self._routing = routing
            try:
                return self._receive(facts, routing)
            finally:
                self._routing = None

    def _record(self, queue_writes: Callable[[Any], None]) -> None:
        """Bookkeeping writes: with the routing lease's release when routing a received ticket
        (one round trip fewer each), else at once."""
        if self._routing is not None:
            self._routing.later.append(queue_writes)
            return
        pipe = self.store.client.pipeline(transaction=True)
        queue_writes(pipe)
        pipe.execute()

    def _receive(self, facts: TicketFacts, routing: Routing) -> str:
        record = routing.record
        if record.state == RESOLVED:
            return "already_resolved"
        facts = record.facts  # the first delivery's facts win
        mark = routing.note_announced  # written when the lease is released, in the same round trip
        if ANNOUNCED_CLASSIFIED not in record.announced:
            self._announce_classified(facts, mark)
        if record.state == ASSIGNED:
            if ANNOUNCED_ASSIGNED not in record.announced:
                self._announce_record_assignment(record, mark)
            return "already_assigned"
        attempt = self._offer_best(record, mark, step="initial", snapshots=routing.snapshots,
                                   first_page=routing.first_page)
        if attempt.status == "none":
            now = self._now()
            state = self.store.enqueue(facts, now=now, relax_due=self._relax_due(0, now), routing=routing)
            if state != QUEUED:
                return f"taken_while_queueing:{state}"
            attempt = self._offer_best(record, mark, step="initial")
        if attempt.status == "none":
            self._record(partial(self.store.queue_decision, ticket_id=facts.ticket_id, decision=attempt.decision))
            if ANNOUNCED_QUEUED not in record.announced:
                self._announce_queued(facts, attempt.decision, mark)
        return "queued" if attempt.status == "none" else attempt.status

    # queue drain
    def drain(self, agent_id: str, trigger: str) -> int:
        """Give waiting tickets to ``agent_id`` (just online, or just freed capacity) while they
        have room: the oldest head among the requirement queues they can serve, each time.

        Reads the queue registry and a few heads per queue the agent matches, never the whole
        queue or the roster, so a drain costs the same with 100,000 tickets waiting.
        """
        assigned = 0
        model = self.policy.capacity_model
        for _ in range(DRAIN_MAX_CLAIMS):
            agent = self.store.agent_snapshot(agent_id, self._now())
            if agent is None:
                break
            served = [r for r in self.store.requirements_waiting() if Requirement.parse(r).served_by(agent, model)]
            if not served:
                break
            heads = sorted(self.store.queue_heads(served, QUEUE_HEAD_DEPTH), key=lambda head: (head[1], head[0]))
            progressed = False
            for (ticket_id, _, requirement), record in zip(heads, self.store.tickets([h[0] for h in heads])):
                if record is None or record.state == RESOLVED:
                    self.store.drop_from_queue(requirement, ticket_id)  # expired or closed meanwhile
                    continue
                if record.state != QUEUED:
                    continue
                scope = f"queue drain for {agent_id} ({trigger}): oldest of the {len(served)} queues they serve"
                attempt = self._offer(record, [agent], partial(self.store.mark_announced, ticket_id),
                                      step="requeue" if record.attempt else "initial", scope=scope)
                if attempt.status == "assigned":
                    assigned += 1
                if attempt.status in ("assigned", "stale") or attempt.stale_snapshot:
                    progressed = True  # re-read the agent (their room or fairness changed) or the queues
                    break
            if not progressed:
                break
        log.info("queue_drained", trigger=trigger, agent_id=agent_id, assigned=assigned,
                 still_waiting=self.store.waiting_count())
        return assigned

    def sweep_queues(self) -> int:
        """Offer the head of every requirement queue again: what no event announces (a fairness
        window or a decline cooldown running out) still reaches a waiting ticket."""
        heads = self.store.queue_heads(self.store.requirements_waiting(), 1)
        assigned = 0
        for (ticket_id, _, _), record in zip(heads, self.store.tickets([h[0] for h in heads])):
            if record is not None and record.state == QUEUED:
                mark = partial(self.store.mark_announced, ticket_id)
                if self._offer_best(record, mark, step="requeue").status == "assigned":
                    assigned += 1
        return assigned

    # offers: accept, decline, expiry, presence
    def accept(self, ticket_id: str, agent_id: str, attempt: int | None = None) -> str:
        """Accept offer ``attempt`` (None: whichever the agent holds, for older desks)."""
        status, holder = self.store.accept(ticket_id, agent_id, now=self._now(), attempt=attempt)
        if status != "accepted":
            log.warning("ticket_accepted_by_other_agent", agent_id=agent_id, assignee=holder, status=status,
                        attempt=attempt)
        return status

    def decline(self, ticket_id: str, agent_id: str, reason: str, attempt: int | None = None) -> str:
        """Pass on offer ``attempt`` (None: whichever the agent holds); a decline of an earlier
        offer, or of an accepted one, changes nothing."""
        record = self.store.ticket(ticket_id)
        if record is None:
            log.warning("decline_of_unknown_ticket", agent_id=agent_id)
            return "unknown"
        now = self._now()
        result = self.store.decline(ticket_id, agent_id, attempt=attempt, now=now, score=record.facts.queue_score(),
                                    note=reason[:500], relax_due=self._relax_due(record.relax_step, now),
                                    requirement=record.facts.requirement_key())
        if result.status in ("accepted", "stale"):
            log.warning("stale_decline_ignored", agent_id=agent_id, status=result.status, attempt=attempt)
        # A redelivery finds the ticket already back in the queue: announcing and re-routing
        # again is harmless (same event ids), and finishes what a crashed first delivery began.
        self.announce_unassignment(ticket_id)
        self.reroute(ticket_id, step="requeue")
        if result.done:
            self.drain(agent_id, trigger=f"declined:{ticket_id}")
        return result.status

    def expire_offers(self) -> int:
        """Return offers whose time ran out to the queue (safe under N replicas: the script
        unassigns only the very offer it was asked about, once)."""
        now = self._now()
        expired = 0
        for ticket_id, due_at in self.store.due_offers(now):
            record = self.store.ticket(ticket_id)
            if record is not None and record.offer_expires_at is not None and record.offer_expires_at > now:
                continue  # another replica expired it and offered it again since the due list was read
            if record is None or record.state != ASSIGNED or record.offer_expires_at is None or not record.agent_id:
                self.store.forget_offer(ticket_id, due_at)
                continue
            result = self.store.expire_offer(ticket_id, record.agent_id, repr(record.offer_expires_at), now=now,
                                             score=record.facts.queue_score(),
                                             relax_due=self._relax_due(record.relax_step, now),
                                             requirement=record.facts.requirement_key())
            if result.done:
                expired += 1
                log.info("offer_expired", ticket_id=ticket_id, agent_id=record.agent_id)
                self.announce_unassignment(ticket_id)
                self.reroute(ticket_id, step="requeue")
                self.drain(record.agent_id, trigger=f"offer_expired:{ticket_id}")
        return expired

    def presence_changed(self, agent_id: str, presence: str) -> int:
        """Away/offline: that agent's unaccepted offers go back to routing. Online: drain."""
        if presence == ONLINE:
            return self.drain(agent_id, trigger="online")
        returned = 0
        now = self._now()
        for record in self.store.tickets(sorted(self.store.open_tickets(agent_id))):
            if (record is None or record.state != ASSIGNED or record.agent_id != agent_id
                    or record.offer_expires_at is None or record.accepted_by):
                continue
            result = self.store.return_offer(record.facts.ticket_id, agent_id, f"agent_{presence}", now=now,
                                             score=record.facts.queue_score(),
                                             relax_due=self._relax_due(record.relax_step, now),
                                             requirement=record.facts.requirement_key())
            if result.done:
                returned += 1
                self.announce_unassignment(record.facts.ticket_id)
                self.reroute(record.facts.ticket_id, step="requeue")
        return returned

    def reroute(self, ticket_id: str, *, step: str, queued_key: str | None = None,
                announce: bool = True) -> Attempt | None:
        """Offer a queued ticket again (after an unassignment, relaxation, escalation, reopen);
        announce ``ticket_queued`` for this step when nobody can take it."""
        record = self.store.ticket(ticket_id)
        if record is None or record.state != QUEUED:
            return None
        mark = partial(self.store.mark_announced, ticket_id)
        attempt = self._offer_best(record, mark, step=step, announce=announce)
        if attempt.status == "none":
            self.store.record_decision(ticket_id, attempt.decision)
            if announce:
                self._announce_queued(record.facts, attempt.decision, _ignore,
                                      key=queued_key or f"{step}-{record.attempt}")
        return attempt

    # transfers, escalation, reopen, relaxation
    def transfer(self, event: ev.TicketTransferRequested) -> str:
        return _on_fresh_reads(self._transfer, event, "the transfer")

    def _transfer(self, event: ev.TicketTransferRequested) -> str | None:
        """Carry out the transfer on a fresh read; None when the ticket changed hands (or its
        offer ended) between the read and the change, so nothing was changed: start over."""
        ticket_id = event.ticket_id
        record = self.store.ticket(ticket_id)
        marker = f"transfer:{event.event_id}"
        if record is None or record.state not in (QUEUED, ASSIGNED, "new"):
            return self._transfer_outcome(event, record, "rejected", None, None, "the ticket is not open")
        if self.store.has_field(ticket_id, marker):
            outcome = "assigned" if record.state == ASSIGNED else "queued"
            return self._transfer_outcome(event, record, outcome, record.unassigned, record.agent_id,
                                          "already carried out")
        requester = self.store.profile(event.requested_by) or {}
        supervisor = requester.get("role") == "supervisor"
        holder = record.agent_id if record.state == ASSIGNED else None
        if event.kind == "reassign" and not supervisor:
            return self._transfer_outcome(event, record, "rejected", None, holder,
                                          f"{event.requested_by} is not a supervisor")
        if event.kind == "transfer" and not supervisor and holder != event.requested_by:
            return self._transfer_outcome(event, record, "rejected", None, holder,
                                          f"{event.requested_by} does not hold the ticket")
        reason_code = "transferred" if event.kind == "transfer" else "reassigned"
        now = self._now()
        if event.to_agent_id:
            target = event.to_agent_id
            if not self.store.is_known_agent(target):
                return self._transfer_outcome(event, record, "rejected", None, holder, f"unknown agent {target}")
            decision = self._decision(None, {}, f"{event.kind} by {event.requested_by}: {event.reason}",
                                      event.kind, target, now, considered=1, eligible=1)
            # Only a supervisor's reassignment overrides the target's capacity and fairness.
            result = self.store.move(ticket_id, holder=holder, target=target, channel=record.facts.channel,
                                     reason=reason_code, by=event.requested_by, now=now, decision=decision,
                                     updates={marker: "1"}, force=event.kind == "reassign")
            if result.status == "moved":
                return None
            if not result.assigned:
                detail = {"same": "already holds it", "no": f"{target} cannot take it now: {result.detail}"}.get(
                    result.status, f"the ticket is {result.detail}")
                return self._transfer_outcome(event, record, "rejected", None, holder, detail)
            after = self.store.ticket(ticket_id)  # the move logged the decision
            self._transfer_outcome(event, record, "assigned", after.unassigned if after else None, holder,
                                   f"assigned to {target}", to_agent=target)
            if holder:
                self.announce_unassignment(ticket_id)
            self._announce_assigned(record.facts, target, decision, partial(self.store.mark_announced, ticket_id),
                                    attempt=result.attempt, offer_expires_at=None)
            if holder:
                self.drain(holder, trigger=f"{reason_code}:{ticket_id}")
            return "assigned"
        group = event.to_group or ""
        updates = {"group": group, "sticky_agent_id": "", marker: "1"}
        requirement = facts_with(record.facts, updates).requirement_key()
        if holder:
            result = self.store.unassign(ticket_id, holder, reason_code, by=event.requested_by, now=now,
                                         score=record.facts.queue_score(), declined=event.kind == "transfer",
                                         note=event.reason[:500], relax_due=self._relax_due(record.relax_step, now),
                                         updates=updates, requirement=requirement)
            if not result.done:
                return None  # it changed hands or went back to the queue: the group must still change
        elif not self.store.update_open_ticket(ticket_id, updates, requirement=requirement, expect_state=QUEUED):
            return None  # a drain claimed it meanwhile: the transfer must take it from its holder
        attempt = self.reroute(ticket_id, step=event.kind, announce=False)
        outcome = "assigned" if attempt is not None and attempt.status == "assigned" else "queued"
        after = self.store.ticket(ticket_id)
        self._transfer_outcome(event, record, outcome, after.unassigned if (after and holder) else None, holder,
                               f"routed within {group}", to_agent=attempt.agent_id if attempt else None)
        if holder:
            self.announce_unassignment(ticket_id)
        if after is not None and attempt is not None:
            if attempt.status == "assigned":
                self._announce_assigned(after.facts, attempt.agent_id or "", attempt.decision,
                                        partial(self.store.mark_announced, ticket_id), attempt=attempt.attempt,
                                        offer_expires_at=attempt.offer_expires_at)
            else:
                self._announce_queued(after.facts, attempt.decision, _ignore, key=f"{event.kind}-{event.event_id}")
        if holder:
            self.drain(holder, trigger=f"{reason_code}:{ticket_id}")
        return outcome

    def _transfer_outcome(self, event: ev.TicketTransferRequested, record: TicketRecord | None, outcome: str,
                          unassigned: Mapping | None, holder: str | None, detail: str,
                          to_agent: str | None = None) -> str:
        trace = record.facts.trace_id if record else event.trace_id
        self.emit(ev.TICKET_TRANSFERRED, now=self.clock(), trace_id=trace, ticket_id=event.ticket_id,
                  event_id=stable_event_id(ev.DISPATCHER, ev.TICKET_TRANSFERRED, event.ticket_id, event.event_id),
                  requested_by=event.requested_by, kind=event.kind, from_agent_id=holder,
                  to_agent_id=to_agent or event.to_agent_id, to_group=event.to_group, reason=event.reason,
                  outcome=outcome, detail=detail)
        log.info("ticket_transfer_handled", kind=event.kind, outcome=outcome, requested_by=event.requested_by,
                 from_agent_id=holder, detail=detail)
        return outcome

    def escalate(self, event: ev.TicketEscalated) -> str:
        """One rung of an SLA escalation ladder: ``reassign_next_tier`` routes the ticket a tier
        up, ``raise_priority`` re-orders it; the ``notify_*`` actions are the notifier's."""
        if event.action == "raise_priority":
            return self.raise_priority(event)
        if event.action != "reassign_next_tier":
            return "not_for_routing"
        return _on_fresh_reads(self._escalate, event, "escalation")

    def raise_priority(self, event: ev.TicketEscalated) -> str:
        """Make an open ticket at least ``to_priority``; a queued one moves up its queues. Never
        lowers a priority; the same event twice changes nothing twice."""
        record = self.store.ticket(event.ticket_id)
        if record is None or record.state not in (QUEUED, ASSIGNED):
            return "not_open"
        target = event.to_priority
        if target is None or PRIORITY_RANK[target] >= PRIORITY_RANK[record.facts.priority]:
            return "already_at_priority"
        raised = replace(record.facts, priority=target)
        return self.store.raise_priority(event.ticket_id, target, raised.queue_score(),
                                         marker=f"escalation:{event.event_id}")

    def _escalate(self, event: ev.TicketEscalated) -> str | None:
        """Escalate on a fresh read; None when the ticket changed hands (or its offer ended)
        between the read and the change, so nothing was changed: start over.

        Each escalation event acts once (a marker field per event id): a ticket may climb once
        per clock that breaches (first response, then resolution), so levels alone cannot tell
        a redelivery from the next escalation."""
        record = self.store.ticket(event.ticket_id)
        if record is None or record.state not in (QUEUED, ASSIGNED):
            return "not_open"
        marker = f"escalation:{event.event_id}"
        queued_key = f"escalation-{event.event_id}"
        if self.store.has_field(event.ticket_id, marker):
            self.announce_unassignment(event.ticket_id)  # a redelivery: finish what was begun
            self.reroute(event.ticket_id, step="escalation", queued_key=queued_key)
            return "duplicate"
        level = str(max(record.escalation_level, event.level))
        current = record.facts.tier
        target = event.to_tier or next_tier(current)
        if target is None or tier_rank(target) <= tier_rank(current):
            self.store.update_open_ticket(event.ticket_id, {"escalation_level": level, marker: "1"})
            return "already_at_tier"
        updates = {"tiers": json.dumps([target]), "escalation_level": level, "sticky_agent_id": "", marker: "1"}
        requirement = facts_with(record.facts, updates).requirement_key()
        now = self._now()
        if record.state == ASSIGNED and record.agent_id:
            holder_tier = (self.store.profile(record.agent_id) or {}).get("tier") or "L1"
            if tier_rank(holder_tier) >= tier_rank(target):
                if not self.store.update_open_ticket(event.ticket_id, updates, requirement, expect_state=ASSIGNED,
                                                     expect_holder=record.agent_id):
                    return None  # the offer ended meanwhile: decide again on a fresh read
                self.store.record_decision(event.ticket_id, self._decision(
                    None, {}, f"escalated to {target}: {record.agent_id} ({holder_tier}) keeps it", "escalation",
                    record.agent_id, now, considered=1, eligible=1))
                return "holder_keeps"
            result = self.store.unassign(event.ticket_id, record.agent_id, "escalated", by=None, now=now,
                                         score=record.facts.queue_score(), note=event.reason[:500],
                                         relax_due=self._relax_due(record.relax_step, now), updates=updates,
                                         requirement=requirement)
            if not result.done:
                return None  # it changed hands or went back to the queue: the tier must still change
            self.announce_unassignment(event.ticket_id)
        elif not self.store.update_open_ticket(event.ticket_id, updates, requirement=requirement, expect_state=QUEUED):
            return None  # a drain claimed it meanwhile: the holder may now be below the new tier
        attempt = self.reroute(event.ticket_id, step="escalation", queued_key=queued_key)
        if record.state == ASSIGNED and record.agent_id:
            self.drain(record.agent_id, trigger=f"escalated:{event.ticket_id}")
        return "assigned" if attempt is not None and attempt.status == "assigned" else "queued"

    def reopen(self, event: ev.TicketReopened) -> str:
        record = self.store.ticket(event.ticket_id)
        if record is None:
            log.warning("reopen_of_unknown_ticket", by=event.by)
            return "unknown"
        owner = record.last_agent_id or event.agent_id
        now = self._now()
        original = record.original_facts()  # relaxation and escalation of the last round are undone
        status = self.store.reopen(event.ticket_id, event.event_id, score=original.queue_score(), now=now,
                                   sticky_agent_id=owner, relax_due=self._relax_due(0, now),
                                   requirement=original.requirement_key())
        if status not in ("reopened", "duplicate", QUEUED):
            return status
        self.store.record_customer_ticket(record.facts, event.ticket_id, received=now, complaint=False)
        attempt = self.reroute(event.ticket_id, step="requeue", queued_key=f"reopen-{event.event_id}")
        return "assigned" if attempt is not None and attempt.status == "assigned" else status

    def relax_waiting(self) -> int:
        """Apply the next relaxation step to tickets that waited long enough, then re-offer them."""
        steps = self.policy.relaxation
        if not steps:
            return 0
        now = self._now()
        applied = 0
        for ticket_id in self.store.relax_due(now):
            record = self.store.ticket(ticket_id)
            index = record.relax_step if record else len(steps)
            if record is None or record.state != QUEUED or index >= len(steps):
                self.store.relax(ticket_id, index, next_due=None, updates={})
                continue
            step = steps[index]
            updates = _relaxed(record.facts, step.step)
            if not self.store.relax(ticket_id, index, next_due=self._relax_due(index + 1, now), updates=updates,
                                    requirement=facts_with(record.facts, updates).requirement_key()):
                continue  # another replica applied it
            applied += 1
            log.info("routing_relaxed", ticket_id=ticket_id, step=step.step, waited=step.after_seconds)
            self.reroute(ticket_id, step=step.step, queued_key=f"{step.step}-{index}")
        return applied

    def _relax_due(self, step_index: int, since: float) -> float | None:
        """When relaxation step ``step_index`` is due for a ticket (re)queued at ``since``:
        ``after_seconds`` are cumulative waits, so the delay is this step's minus the last one's."""
        steps = self.policy.relaxation
        if step_index >= len(steps):
            return None
        previous = steps[step_index - 1].after_seconds if step_index else 0.0
        return since + steps[step_index].after_seconds - previous

    # internals
    def _offer_best(self, record: TicketRecord, mark: Mark, *, step: str, announce: bool = True,
                    snapshots: list[AgentSnapshot] | None = None,
                    first_page: tuple[str, str, list[AgentSnapshot], int] | None = None) -> Attempt:
        """Offer to the whole roster when it is small, else page by page down the availability
        index of the ticket's channel and first required skill (every agent there is online
        with room; the other filters run on the page). A ticket whose requirements changed since
        ``record`` was read is read again and ranked again. ``first_page``: (channel, skill,
        agents, size) of an index's first page already read with the routing lease; used if it is
        this ticket's index (the first delivery's facts win, a redelivery's may differ) on the
        first try only (a re-read ticket may have moved to another index)."""
        for _ in range(STALE_READ_RETRIES):
            attempt = self._offer_ranked(record, mark, step=step, announce=announce, snapshots=snapshots,
                                         first_page=first_page)
            first_page = None
            if attempt.status != "stale":
                return attempt
            fresh = self.store.ticket(record.facts.ticket_id)
            if fresh is None or fresh.state not in (QUEUED, "new"):
                return replace(attempt, status="taken")
            record = fresh
        return replace(attempt, status="taken")  # it keeps changing: whoever changes it routes it

    def _offer_ranked(self, record: TicketRecord, mark: Mark, *, step: str, announce: bool,
                      snapshots: list[AgentSnapshot] | None,
                      first_page: tuple[str, str, list[AgentSnapshot], int] | None) -> Attempt:
        if snapshots is not None or not self.store.uses_index() or not record.facts.required_skills:
            if snapshots is None:
                snapshots = self.store.agent_snapshots(self._now())
            return self._offer(record, snapshots, mark, step=step, announce=announce)
        channel, skill = record.facts.channel, record.facts.required_skills[0]
        page = 0
        counts: dict[str, int] = {}  # rejections by kind over every page read
        while True:
            if page == 0 and first_page is not None and first_page[:2] == (channel, skill):
                agents, total = first_page[2:]
            else:
                agents, total = self.store.index_page(channel, skill, page=page, now=self._now())
            sticky = record.facts.sticky_agent_id
            if page == 0 and sticky and all(a.agent_id != sticky for a in agents):
                # The owner may sit far down the index (less spare share); the ranking prefers them
                # when they are eligible, so they are ranked with the first page.
                owner = self.store.agent_snapshot(sticky, self._now())
                if owner is not None:
                    agents = [*agents, owner]
            first = page * INDEX_PAGE_SIZE + 1
            scope = (f"ranked agents {first}-{first + len(agents) - 1} of the {total} online with room for "
                     f"{channel} and {skill}")
            last_page = first - 1 + INDEX_PAGE_SIZE >= total
            attempt = self._offer(record, agents, mark, step=step, scope=scope, announce=announce)
            for kind, n in (attempt.decision or {}).get("rejected_counts", {}).items():
                counts[kind] = counts.get(kind, 0) + n
            if attempt.status != "none" or last_page:
                if attempt.status == "none" and total == 0:
                    attempt = replace(attempt, decision={**attempt.decision, "reason":
                                      f"no agent online with room for {channel} and {skill}"})
                elif attempt.status == "none" and page > 0:
                    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
                    attempt = replace(attempt, decision={
                        **attempt.decision, "rejected_counts": counts, "considered": total,
                        "reason": f"no eligible agent: {summary} (all {total} online with room for {channel} "
                                  f"and {skill} ranked, {page + 1} pages of the index)"})
                return attempt
            page += 1

    def _offer(self, record: TicketRecord, snapshots: Iterable[AgentSnapshot], mark: Mark, *, step: str,
               scope: str | None = None, announce: bool = True) -> Attempt:
        """Claim for the best-ranked agent that still has room; ``scope`` says (in the decision's
        reason) which agents were ranked when it was not the whole roster."""
        facts = record.facts
        now = self._now()
        policy = self.policy
        needs = facts.needs(declined_by=record.declined_since(now - policy.decline_cooldown_seconds))
        ranking = rank_agents(needs, snapshots, now, capacity_model=policy.capacity_model,
                              fairness_max=policy.fairness_max, proficiency_weight=policy.proficiency_weight,
                              preferred_weight=policy.preferred_weight)
        rejected = dict(ranking.rejected)
        stale = False
        offer_expires_at = now + policy.offer_timeout_seconds if policy.offers else None
        for candidate in ranking.ranked:
            reason = assigned_reason(needs, candidate, len(ranking.ranked))
            chosen_step = "sticky" if candidate.sticky else step
            decision = self._decision(ranking, rejected, f"{reason} ({scope})" if scope else reason, chosen_step,
                                      candidate.agent_id, now)
            result = self.store.claim(facts.ticket_id, candidate.agent_id, facts.channel, now=now, decision=decision,
                                      offer_expires_at=offer_expires_at, requirement=record.requirement_stamp,
                                      routing=self._routing)
            if result.assigned:  # the claim script logged the decision
                self._record(partial(self.store.queue_customer_agent, facts=facts,
                                     agent_id=candidate.agent_id, at=now))
                if announce:
                    self._announce_assigned(facts, candidate.agent_id, decision, mark, attempt=result.attempt,
                                            offer_expires_at=offer_expires_at)
                return Attempt("assigned", ranking, candidate.agent_id, stale, decision, result.attempt,
                               offer_expires_at)
            if result.status == "stale":
                return Attempt("stale", ranking, None, stale)
            if result.status != "no":
                # "existing" may be our own claim whose reply was lost (a retried script): it is
                # in the unannounced outbox, so the timer announces it with the decision on record;
                # announcing here could race a concurrent worker still publishing its own claim.
                return Attempt("taken", ranking, result.detail if result.status == "existing" else None, stale)
            rejected[candidate.agent_id] = f"{result.detail} (claimed concurrently)"
            stale = True
        decision = self._decision(ranking, rejected, queued_reason(ranking), step, None, now)
        return Attempt("none", ranking, None, stale, decision)

    def _decision(self, ranking: Ranking | None, rejected: dict[str, str], reason: str, step: str,
                  winner: str | None, now: float, *, considered: int | None = None,
                  eligible: int | None = None) -> dict[str, Any]:
        shown = dict(sorted(rejected.items())[:REJECTED_REPORT_LIMIT])
        if len(rejected) > len(shown):
            reason += f" ({len(rejected) - len(shown)} more rejections not listed)"
        return {
            "considered": considered if considered is not None else (ranking.considered if ranking else 0),
            "eligible": eligible if eligible is not None else (len(ranking.ranked) if ranking else 0),
            "reason": reason, "rejected": shown, "rejected_counts": rejection_counts(rejected),
            "candidates": [c.as_score() for c in ranking.ranked[:CANDIDATES_REPORTED]] if ranking else [],
            "winner": winner, "step": step, "policy": self.policy.name,
            "decided_at": datetime.fromtimestamp(now, timezone.utc).isoformat(),
        }

    def _announce_classified(self, facts: TicketFacts, mark: Mark) -> None:
        self.emit(ev.TICKET_CLASSIFIED, now=self.clock(), trace_id=facts.trace_id, ticket_id=facts.ticket_id,
                  event_id=stable_event_id(ev.DISPATCHER, ev.TICKET_CLASSIFIED, facts.ticket_id),
                  channel=facts.channel, priority=facts.priority, required_skills=list(facts.required_skills),
                  language=facts.language, tags=list(facts.tags), received_at=facts.received_at,
                  customer_tier=facts.customer_tier, preferred_skills=list(facts.preferred_skills),
                  category=facts.category, group=facts.group, signals=list(facts.signals),
                  matched_rules=list(facts.matched_rules), customer_id=facts.customer_id,
                  history=json.loads(facts.customer_summary) if facts.customer_summary else None)
        mark(ANNOUNCED_CLASSIFIED)

    def _announce_assigned(self, facts: TicketFacts, agent_id: str, decision: dict, mark: Mark, *,
                           attempt: int, offer_expires_at: float | None) -> None:
        expires = datetime.fromtimestamp(offer_expires_at, timezone.utc) if offer_expires_at is not None else None
        self.emit(ev.TICKET_ASSIGNED, now=self.clock(), trace_id=facts.trace_id, ticket_id=facts.ticket_id,
                  event_id=stable_event_id(ev.DISPATCHER, ev.TICKET_ASSIGNED, facts.ticket_id, agent_id,
                                           str(max(1, attempt))),
                  agent_id=agent_id, channel=facts.channel, priority=facts.priority,
                  required_skills=list(facts.required_skills), decision=decision, attempt=max(1, attempt),
                  offer_expires_at=expires, preferred_skills=list(facts.preferred_skills), group=facts.group,
                  tier=facts.tier)
        if attempt <= 1:
            metrics.assignment_latency(facts.channel, facts.received_at, self.clock())
        mark(ANNOUNCED_ASSIGNED)
        log.info("ticket_assigned", ticket_id=facts.ticket_id, agent_id=agent_id, channel=facts.channel,
                 priority=facts.priority, step=decision.get("step"), attempt=attempt, reason=decision.get("reason"))

    def _announce_record_assignment(self, record: TicketRecord, mark: Mark) -> None:
        self._announce_assigned(record.facts, record.agent_id or "", record.decision or _NO_DECISION, mark,
                                attempt=record.attempt, offer_expires_at=record.offer_expires_at)

    def _announce_queued(self, facts: TicketFacts, decision: dict, mark: Mark, key: str | None = None) -> None:
        parts = (facts.ticket_id,) if key is None else (facts.ticket_id, key)
        self.emit(ev.TICKET_QUEUED, now=self.clock(), trace_id=facts.trace_id, ticket_id=facts.ticket_id,
                  event_id=stable_event_id(ev.DISPATCHER, ev.TICKET_QUEUED, *parts),
                  channel=facts.channel, priority=facts.priority, required_skills=list(facts.required_skills),
                  reason=decision["reason"], decision=decision, preferred_skills=list(facts.preferred_skills),
                  group=facts.group, tier=facts.tier, received_at=facts.received_at)
        mark(ANNOUNCED_QUEUED)
        log.info("ticket_queued", ticket_id=facts.ticket_id, channel=facts.channel, priority=facts.priority,
                 step=decision.get("step"), reason=decision["reason"])

    def announce_unassignment(self, ticket_id: str) -> bool:
        """Publish every unassignment of the ticket not announced yet, oldest first."""
        record = self.store.ticket(ticket_id)
        if record is None or not record.pending_unassignments:
            self.store.forget_unassignment(ticket_id, None)
            return False
        for attempt, info in sorted(record.pending_unassignments.items()):
            self.emit(ev.TICKET_UNASSIGNED, now=self.clock(), trace_id=record.facts.trace_id, ticket_id=ticket_id,
                      event_id=stable_event_id(ev.DISPATCHER, ev.TICKET_UNASSIGNED, ticket_id, info["agent_id"],
                                               str(attempt)),
                      agent_id=info["agent_id"], reason=info["reason"], by=info.get("by") or None,
                      note=info.get("note") or "")
            self.store.forget_unassignment(ticket_id, attempt)
            log.info("ticket_unassigned", ticket_id=ticket_id, agent_id=info["agent_id"], reason=info["reason"])
        return True

    def announce_orphaned_claims(self) -> int:
        """Announce claims (and unassignments) older than the grace period whose event was never
        confirmed; returns how many were announced."""
        cutoff = self._now() - ANNOUNCE_GRACE_SECONDS
        announced = 0
        for ticket_id in self.store.unannounced_before(cutoff):
            record = self.store.ticket(ticket_id)
            if record is None or record.state != ASSIGNED or ANNOUNCED_ASSIGNED in record.announced:
                self.store.forget_unannounced(ticket_id)
                continue
            log.warning("orphaned_claim_announced", ticket_id=ticket_id, agent_id=record.agent_id)
            self._announce_record_assignment(record, partial(self.store.mark_announced, ticket_id))
            announced += 1
        for ticket_id in self.store.unassignments_before(cutoff):
            if self.announce_unassignment(ticket_id):
                log.warning("orphaned_unassignment_announced", ticket_id=ticket_id)
                announced += 1
        return announced

    def roster_removed(self, agent_id: str) -> int:
        """``agent_id`` left the roster: every ticket they still hold (offered or accepted) goes
        back to routing as ``roster_removed``. The desk no longer signs them in, so an accepted
        ticket left with them would wait for nobody. Safe under N replicas: the script unassigns
        only from the agent who still holds the ticket."""
        returned = 0
        now = self._now()
        for record in self.store.tickets(sorted(self.store.open_tickets(agent_id))):
            if record is None or record.state != ASSIGNED or record.agent_id != agent_id:
                continue
            result = self.store.unassign(record.facts.ticket_id, agent_id, "roster_removed", now=now,
                                         score=record.facts.queue_score(),
                                         relax_due=self._relax_due(record.relax_step, now),
                                         requirement=record.facts.requirement_key())
            if result.done:  # else another replica did it (a publish it missed is in the outbox)
                returned += 1
                self.announce_unassignment(record.facts.ticket_id)
                self.reroute(record.facts.ticket_id, step="requeue")
        return returned


def _on_fresh_reads(attempt: Callable[[Any], str | None], event: ev.TicketEvent, what: str) -> str:
    """Run ``attempt`` (None = the ticket changed hands between its read and its change, so
    nothing changed) until it settles; a ticket that keeps moving is retried later."""
    for _ in range(CHANGED_RETRIES):
        outcome = attempt(event)
        if outcome is not None:
            return outcome
    raise TransientError(f"ticket {event.ticket_id} kept changing hands during {what}; retrying")


_NO_DECISION = {"considered": 0, "eligible": 0, "reason": "claim recorded without a decision"}


def _relaxed(facts: TicketFacts, step: str) -> dict[str, str]:
    """The ticket-hash fields a relaxation step changes."""
    if step == "drop_preferred":
        return {"preferred_skills": "[]"}
    if step == "widen_group":
        # "Widen to the group": the required skills no longer bind; the ticket's group (if it
        # has one) still does, so a billing ticket goes to anyone on the billing team.
        return {"required_skills": "[]"}
    highest = max(facts.tiers, key=tier_rank) if facts.tiers else "L1"
    wider = next_tier(highest)
    return {"tiers": json.dumps(list(facts.tiers) + ([wider] if wider else []))}
