"""Turning routing advice into assignments: claim in ranked order, queue, drain, announce.

The ranking (routing.py) is computed from a snapshot that may be stale by the time it is
used; the store's Lua claim is the authority. So the assigner walks the ranking until one
claim succeeds, and records an agent that lost its last slot to a concurrent claim as
rejected for that reason.

Announcements (``ticket_classified``, ``ticket_assigned``, ``ticket_queued``) carry stable
event ids and are marked in the ticket's record once the broker confirmed them (while routing
a received ticket, when its lease is released, in that same round trip), so a redelivered
``ticket_received`` re-announces what a crashed worker did not mark, with the same event ids.

A ticket that finds no agent is queued, then offered once more from a fresh snapshot: an
agent who came online between the first snapshot and the enqueue has already run their drain
and would otherwise not see this ticket until the next event.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import Any, Callable, Iterable

from services.dispatcher.routing import (
    ONLINE,
    AgentSnapshot,
    Ranking,
    assigned_reason,
    queued_reason,
    rank_agents,
)
from services.dispatcher.store import (
    ANNOUNCED_ASSIGNED,
    ANNOUNCED_CLASSIFIED,
    ANNOUNCED_QUEUED,
    ASSIGNED,
    QUEUED,
    RESOLVED,
    DispatchStore,
    Routing,
    TicketFacts,
)
from shared import events as ev
from shared.intake_ledger import stable_event_id
from shared.logging import get_logger

log = get_logger(__name__)

REJECTED_REPORT_LIMIT = 50  # the decision names at most this many filtered agents (counts cover the rest)
DRAIN_PAGE_SIZE = 100
# A claim this old without a confirmed ticket_assigned belongs to a worker that died mid-way
# (or whose publish failed); the service's timer re-announces such claims this often.
ANNOUNCE_GRACE_SECONDS = 2.0

Emit = Callable[..., dict]
# Records that an announcement was confirmed by the broker (what: ANNOUNCED_*).
Mark = Callable[[str], None]


@dataclass(frozen=True)
class Attempt:
    status: str  # assigned | taken (someone else holds it) | none (no claim succeeded)
    ranking: Ranking
    agent_id: str | None = None
    stale_snapshot: bool = False  # a claim saw presence/capacity differ from the snapshot


class Assigner:
    def __init__(self, store: DispatchStore, emit: Emit, clock: Callable[[], datetime]):
        self.store = store
        self.emit = emit
        self.clock = clock

    # received tickets
    def receive(self, facts: TicketFacts) -> str:
        """Route a received ticket once; returns what happened (for the log)."""
        with self.store.routing(facts) as routing:
            return self._receive(facts, routing)

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
                self._announce_assigned(facts, record.agent_id or "", record.decision or {}, mark)
            return "already_assigned"
        attempt = self._offer(facts, routing.snapshots, mark)
        if attempt.status == "none":
            state = self.store.enqueue(facts)
            if state != QUEUED:
                return f"taken_while_queueing:{state}"
            attempt = self._offer(facts, self.store.agent_snapshots(), mark)
        if attempt.status == "none" and ANNOUNCED_QUEUED not in record.announced:
            self._announce_queued(facts, queued_reason(attempt.ranking), mark)
        return "queued" if attempt.status == "none" else attempt.status

    # queue drain
    def drain(self, trigger: str) -> int:
        """Offer waiting tickets, in queue order, while any online agent has room.

        Each ticket is ranked against only the agents online with spare capacity on its channel
        (kept per channel and updated as claims land), not the whole roster: a drain with a long
        queue and one freed agent costs queue × agents-with-room, not queue × roster.
        """
        self.announce_orphaned_claims()
        snapshots = {a.agent_id: a for a in self.store.agent_snapshots()}
        room = _agents_with_room(snapshots.values())
        assigned = 0
        cursor: float | None = None
        while room:
            ids, cursor = self.store.waiting_page(cursor, DRAIN_PAGE_SIZE)
            if not ids:
                break
            records = self.store.tickets(ids)
            self.store.forget_waiting([tid for tid, rec in zip(ids, records) if rec is None])
            for record in records:
                if record is None or record.state != QUEUED or record.facts.channel not in room:
                    continue
                channel = record.facts.channel
                candidates = room[channel]
                scope = (f"queue drain: ranked the {len(candidates)} of {len(snapshots)} agents "
                         f"online with spare {channel} capacity")
                mark = partial(self.store.mark_announced, record.facts.ticket_id)
                attempt = self._offer(record.facts, list(candidates.values()), mark, scope=scope)
                if attempt.stale_snapshot:
                    snapshots = {a.agent_id: a for a in self.store.agent_snapshots()}
                    room = _agents_with_room(snapshots.values())
                elif attempt.status == "assigned" and attempt.agent_id in snapshots:
                    updated = _with_one_more(snapshots[attempt.agent_id], channel, self.clock().timestamp())
                    snapshots[attempt.agent_id] = updated
                    _update_room(room, updated)
                if attempt.status == "assigned":
                    assigned += 1
                if not room:
                    break
        log.info("queue_drained", trigger=trigger, assigned=assigned, still_waiting=self.store.waiting_count())
        return assigned

    # internals
    def _offer(self, facts: TicketFacts, snapshots: Iterable[AgentSnapshot], mark: Mark,
               scope: str | None = None) -> Attempt:
        """Claim for the best-ranked agent that still has room; ``scope`` says (in the decision's
        reason) which agents were ranked when it was not the whole roster."""
        now = self.clock().timestamp()
        ranking = rank_agents(facts.needs(), snapshots, now)
        rejected = dict(ranking.rejected)
        stale = False
        for candidate in ranking.ranked:
            reason = assigned_reason(facts.needs(), candidate, len(ranking.ranked))
            decision = _decision(ranking, rejected, f"{reason} ({scope})" if scope else reason)
            result = self.store.claim(facts.ticket_id, candidate.agent_id, facts.channel, now=now, decision=decision)
            if result.assigned:
                self._announce_assigned(facts, candidate.agent_id, decision, mark)
                return Attempt("assigned", ranking, candidate.agent_id, stale)
            if result.status != "no":
                # "existing" may be our own claim whose reply was lost (a retried script): it is
                # in the unannounced outbox, so the timer announces it with the decision on record;
                # announcing here could race a concurrent worker still publishing its own claim.
                return Attempt("taken", ranking, result.detail if result.status == "existing" else None, stale)
            rejected[candidate.agent_id] = f"{result.detail} (claimed concurrently)"
            stale = True
        return Attempt("none", ranking, None, stale)

    def _announce_classified(self, facts: TicketFacts, mark: Mark) -> None:
        self.emit(ev.TICKET_CLASSIFIED, now=self.clock(), trace_id=facts.trace_id, ticket_id=facts.ticket_id,
                  event_id=stable_event_id(ev.DISPATCHER, ev.TICKET_CLASSIFIED, facts.ticket_id),
                  channel=facts.channel, priority=facts.priority, required_skills=list(facts.required_skills),
                  language=facts.language, tags=list(facts.tags), received_at=facts.received_at)
        mark(ANNOUNCED_CLASSIFIED)

    def _announce_assigned(self, facts: TicketFacts, agent_id: str, decision: dict, mark: Mark) -> None:
        self.emit(ev.TICKET_ASSIGNED, now=self.clock(), trace_id=facts.trace_id, ticket_id=facts.ticket_id,
                  event_id=stable_event_id(ev.DISPATCHER, ev.TICKET_ASSIGNED, facts.ticket_id, agent_id),
                  agent_id=agent_id, channel=facts.channel, priority=facts.priority,
                  required_skills=list(facts.required_skills), decision=decision)
        mark(ANNOUNCED_ASSIGNED)
        log.info("ticket_assigned", ticket_id=facts.ticket_id, agent_id=agent_id, channel=facts.channel,
                 priority=facts.priority, reason=decision.get("reason"))

    def _announce_queued(self, facts: TicketFacts, reason: str, mark: Mark) -> None:
        self.emit(ev.TICKET_QUEUED, now=self.clock(), trace_id=facts.trace_id, ticket_id=facts.ticket_id,
                  event_id=stable_event_id(ev.DISPATCHER, ev.TICKET_QUEUED, facts.ticket_id),
                  channel=facts.channel, priority=facts.priority, required_skills=list(facts.required_skills),
                  reason=reason)
        mark(ANNOUNCED_QUEUED)
        log.info("ticket_queued", ticket_id=facts.ticket_id, channel=facts.channel, priority=facts.priority,
                 reason=reason)

    def announce_orphaned_claims(self) -> int:
        """Announce claims older than the grace period whose ``ticket_assigned`` was never
        confirmed; returns how many were announced."""
        cutoff = self.clock().timestamp() - ANNOUNCE_GRACE_SECONDS
        announced = 0
        for ticket_id in self.store.unannounced_before(cutoff):
            record = self.store.ticket(ticket_id)
            if record is None or record.state != ASSIGNED or ANNOUNCED_ASSIGNED in record.announced:
                self.store.forget_unannounced(ticket_id)
                continue
            log.warning("orphaned_claim_announced", ticket_id=ticket_id, agent_id=record.agent_id)
            self._announce_assigned(record.facts, record.agent_id or "", record.decision or {},
                                    partial(self.store.mark_announced, ticket_id))
            announced += 1
        return announced


def _decision(ranking: Ranking, rejected: dict[str, str], reason: str) -> dict[str, Any]:
    shown = dict(sorted(rejected.items())[:REJECTED_REPORT_LIMIT])
    if len(rejected) > len(shown):
        reason += f" ({len(rejected) - len(shown)} more rejections not listed)"
    return {"considered": ranking.considered, "eligible": len(ranking.ranked), "reason": reason, "rejected": shown}


def _agents_with_room(agents: Iterable[AgentSnapshot]) -> dict[str, dict[str, AgentSnapshot]]:
    """channel → {agent_id: snapshot} of the online agents with spare capacity on it."""
    room: dict[str, dict[str, AgentSnapshot]] = {}
    for agent in agents:
        _update_room(room, agent)
    return room


def _update_room(room: dict[str, dict[str, AgentSnapshot]], agent: AgentSnapshot) -> None:
    for channel in agent.capacity:
        if agent.presence == ONLINE and agent.spare(channel) > 0:
            room.setdefault(channel, {})[agent.agent_id] = agent
        elif channel in room:
            room[channel].pop(agent.agent_id, None)
            if not room[channel]:
                del room[channel]


def _with_one_more(agent: AgentSnapshot, channel: str, now: float) -> AgentSnapshot:
    load = dict(agent.load)
    load[channel] = load.get(channel, 0) + 1
    return replace(agent, load=load, last_assigned_at=now)
