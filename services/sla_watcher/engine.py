"""The SLA engine: ticket events move clocks, a sweep fires what falls due, a walk carries open
clocks to a new config. No nameko here: the service wires it, the benchmark drives it alone.

Every clock change is one compare-and-set write (store.put_clocks): read, decide with the
calendar (clocks.py), announce, write; a conflict reads again. An event that moves several clocks
of one ticket reads them in one round trip and writes them in one (each still its own
compare-and-set: a conflict redoes only that clock). The announcement goes out
before the write and its ``event_id`` is derived from what caused it (the incoming event's id,
the item that fell due, the config generation), so a worker that dies between the two, or a
write that has to be redone, announces the same event again with the same id: at least once,
recognisably.

Config generations: each replica loads the policy and calendar files itself (hot reload);
Redis numbers each distinct version as it is first loaded, the newest wins. A clock remembers
the generation it was computed under. A replica meeting an older clock recomputes it first (the
clock's history replayed under the new policy and calendar, ``recomputed`` when anything
visible changed); meeting a newer one, it looks at its files at once, and if it is still
behind it leaves the clock to a replica that is not (a retry, or the due member put back).
One replica at a time walks every open clock to the newest generation, so a clock nobody
touches is recomputed too.
"""
from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Callable, Protocol

from services.sla_watcher import clocks as c
from services.sla_watcher.clocks import Clock
from services.sla_watcher.store import CLAIM_LEASE_SECONDS, Claimed, Noted, SlaStore, TicketRecord
from shared import events as ev
from shared.business_calendar import ALWAYS, BusinessCalendar
from shared.errors import TransientError
from shared.intake_ledger import stable_event_id
from shared.logging import get_logger
from shared.sla_policy import Policy, SlaConfig, select_policy

log = get_logger(__name__)

SWEEP_BATCH = 500       # clocks claimed per round
CAS_ATTEMPTS = 20       # rounds of read-decide-write before giving up as transient
RECOMPUTE_PAGE = 500    # open clocks read per step of the recompute walk
TIDY_PAGE = 200         # open clocks checked per recompute tick for an expired record (~3 h per 1M)
# Due members brought forward per step when a new config arrives (one Redis script: ~10 ms).
RESCORE_PAGE = 20000
LEASE_RENEW_MARGIN_SECONDS = 10.0  # a claim this close to running out is renewed before the next item
BEHIND_RETRY_SECONDS = 1.0  # a due clock of a newer config generation waits this long for a replica that has it

Emit = Callable[..., Any]  # emit(event_type, /, *, now: datetime, trace_id: str, **fields)


@dataclass(frozen=True)
class Loaded:
    config: SlaConfig
    gen: int


Transition = Callable[[Clock, TicketRecord], tuple[Clock, str | None]]
Create = Callable[[TicketRecord, Loaded], tuple[Clock | None, str | None]]


class ConfigSource(Protocol):
    def current(self, now: float) -> Loaded: ...

    def refresh(self, now: float) -> Loaded: ...


class ConfigBehind(TransientError):
    """A clock was computed under a newer config than this replica has."""


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


def customer_key(customer: ev.Customer) -> str | None:
    """The customer a ticket names (the dispatcher's key: second contacts match its history)."""
    from services.dispatcher.customers import customer_key as dispatcher_customer_key
    return dispatcher_customer_key(customer)


@dataclass
class _Firing:
    """A claimed clock in a sweep round: its items due by now, fired in due order."""

    claimed: Claimed
    clock: Clock
    ticket: TicketRecord
    calendar: BusinessCalendar
    items: list[tuple[float, int, c.PlanItem]]
    position: int = 0
    fired: list[str] = field(default_factory=list)
    held_until: float = 0.0  # the claim's lease as this sweep last extended it (0: check first)


class SlaEngine:
    def __init__(self, store: SlaStore, configs: ConfigSource, emit: Emit, *, clock: Callable[[], float] = time.time,
                 batch: int = SWEEP_BATCH):
        self.store = store
        self.configs = configs
        self.emit = emit
        self.clock = clock
        self.batch = batch

    # ------------------------------------------------------------------ ticket events

    def ticket_classified(self, event: ev.TicketClassified) -> None:
        """Start first response and resolution at ``received_at`` (a backlog buys no time)."""
        received_at = event.received_at.timestamp()
        names = (c.FIRST_RESPONSE, c.RESOLUTION)
        # The note hands back the ticket and both clocks: the first read-decide-write round needs no read.
        noted = self.store.note_classified(
            event.ticket_id, trace_id=event.trace_id, channel=event.channel, priority=event.priority,
            customer_tier=event.customer_tier, category=event.category, received_at=received_at, clocks=names)
        self._changes(event.ticket_id, [self._starter(event.ticket_id, name, at=received_at) for name in names],
                      at=received_at, trigger=event.event_id, read=(noted.ticket, noted.clocks))
        if noted.complete:
            self._second_contact(event.ticket_id, noted)

    def ticket_received(self, event: ev.TicketReceived) -> None:
        """Who the customer is (a second contact soon after a resolution escalates). A call
        resolved on first contact is a resolution at once: nothing starts, and it counts as the
        customer's last resolution."""
        customer = customer_key(event.customer)
        noted = self.store.note_received(
            event.ticket_id, trace_id=event.trace_id, customer=customer,
            linked_ticket_id=event.linked_ticket_id, received_at=event.received_at.timestamp())
        if ev.resolved_at_intake(event.source):
            self._resolve(event.ticket_id, event.received_at.timestamp(), "solved", event.event_id, customer)
            return
        if noted.complete:
            self._second_contact(event.ticket_id, noted)

    def ticket_assigned(self, event: ev.TicketAssigned) -> None:
        self.store.set_agent(event.ticket_id, event.agent_id, event.occurred_at.timestamp(), event.attempt)

    def ticket_unassigned(self, event: ev.TicketUnassigned) -> bool:
        return self.store.clear_agent(event.ticket_id, event.agent_id, event.occurred_at.timestamp())

    def agent_replied(self, event: ev.AgentReplied) -> None:
        """A reply fulfils first response (a reply before the clock started leaves a tombstone,
        so it never starts) and the running next response."""
        at = event.occurred_at.timestamp()
        self.store.note_reply(event.ticket_id, at)
        ticket_id = event.ticket_id
        self._changes(ticket_id, [self._finisher(ticket_id, c.FIRST_RESPONSE, c.FULFILLED, at, tombstone=True),
                                  self._finisher(ticket_id, c.NEXT_RESPONSE, c.FULFILLED, at, tombstone=False)],
                      at=at, trigger=event.event_id)

    def message_received(self, event: ev.MessageReceived) -> None:
        """A customer wrote: paused clocks resume, and a message after an agent's reply starts
        next response (one the agent already answered does not: events may cross)."""
        self.customer_wrote(event.ticket_id, event.received_at.timestamp(), event.event_id)

    def ticket_attached(self, event: ev.TicketAttached) -> None:
        """A contact on another channel folded into the open ticket (mode attach) is the customer
        writing on that ticket; a linked one is a ticket of its own with its own clocks."""
        if event.mode == "attach":
            self.customer_wrote(event.into_ticket_id, event.received_at.timestamp(), event.event_id)

    def customer_wrote(self, ticket_id: str, at: float, trigger: str) -> None:
        paused = self.store.set_paused(ticket_id, False, at)
        if not paused:
            self._changes(ticket_id, [(name, lambda clock, _t: c.resume(clock, at), None)
                                      for name in (c.NEXT_RESPONSE, c.RESOLUTION)], at=at, trigger=trigger)
        ticket = self.store.ticket(ticket_id)
        if ticket.last_reply_at is not None and at > ticket.last_reply_at:
            self._start(ticket_id, c.NEXT_RESPONSE, at=at, trigger=trigger, new_cycle=True)

    def ticket_status_changed(self, event: ev.TicketStatusChanged) -> None:
        """The status's pause flag stops or restarts next response and resolution. The latest
        status change or customer message wins, whatever order they are handled in."""
        at = event.occurred_at.timestamp()
        paused = self.store.set_paused(event.ticket_id, event.paused, at)
        self._changes(event.ticket_id,
                      [(name, lambda clock, _t: c.pause(clock, at) if paused else c.resume(clock, at), None)
                       for name in (c.NEXT_RESPONSE, c.RESOLUTION)], at=at, trigger=event.event_id)

    def ticket_resolved(self, event: ev.TicketResolved) -> None:
        """Resolution is fulfilled (stopped for spam, merged, auto-closed); the others stop. A
        resolution older than the latest reopen is a redelivery: the ticket stays open. A reopen
        that was handled before this resolution (catch-up: queues drain in any order) is applied
        now, right after it."""
        at = event.occurred_at.timestamp()
        ticket = self.store.ticket(event.ticket_id)
        if ticket.reopened_at is not None and at <= ticket.reopened_at:
            log.info("sla_resolution_superseded", ticket_id=event.ticket_id, trace_id=event.trace_id,
                     event_id=event.event_id)
            return
        self._resolve(event.ticket_id, at, event.resolution, event.event_id, ticket.customer)
        if ticket.pending_reopen_at is not None and ticket.pending_reopen_at >= at and ticket.pending_reopen_id:
            self._reopen(event.ticket_id, ticket.pending_reopen_at, ticket.pending_reopen_id)

    def _resolve(self, ticket_id: str, at: float, resolution: str, trigger: str, customer: str | None) -> None:
        self.store.set_resolved(ticket_id, at, customer)
        outcome = c.FULFILLED if resolution == "solved" else c.STOPPED
        self._changes(ticket_id, [self._finisher(ticket_id, c.RESOLUTION, outcome, at, tombstone=True),
                                  self._finisher(ticket_id, c.FIRST_RESPONSE, c.STOPPED, at, tombstone=True),
                                  self._finisher(ticket_id, c.NEXT_RESPONSE, c.STOPPED, at, tombstone=False)],
                      at=at, trigger=trigger)

    def ticket_reopened(self, event: ev.TicketReopened) -> None:
        """The resolution clock goes on where it stopped; a reopen within the policy's
        ``reopen_escalation_hours`` of the resolution escalates. A reopen handled before its
        resolution waits on the ticket for it (see ticket_resolved)."""
        at = event.occurred_at.timestamp()
        ticket = self.store.ticket(event.ticket_id)
        if ticket.reopened_at is not None and at <= ticket.reopened_at:
            return  # handled already (a redelivery)
        if ticket.resolved_at is None:
            resolution = self.store.clock(event.ticket_id, c.RESOLUTION)
            if resolution is None or resolution.is_open:
                self.store.note_pending_reopen(event.ticket_id, at, event.event_id)
                log.info("sla_reopen_waits_for_resolution", ticket_id=event.ticket_id, trace_id=event.trace_id)
                return
        self._reopen(event.ticket_id, at, event.event_id)

    def _reopen(self, ticket_id: str, at: float, trigger: str) -> None:
        self._change(ticket_id, c.RESOLUTION,
                     lambda clock, t: c.reopen(clock, at, paused=t.paused) if clock.plan else (clock, None),
                     at=at, trigger=trigger)
        ticket = self.store.ticket(ticket_id)
        if ticket.resolved_at is not None:
            loaded = self.configs.current(self.clock())
            policy = self._policy_for(ticket, loaded.config, self._clock_policy(ticket_id))
            self._reopen_escalation(ticket, policy, trigger="reopen", since=ticket.resolved_at, at=at,
                                    key=repr(ticket.resolved_at),
                                    reason=f"reopened {_duration(at - ticket.resolved_at)} after resolution")
        # Recorded only once announced: a redelivery after a crash escalates again, same ids.
        self.store.set_reopened(ticket_id, at)

    # ------------------------------------------------------------------ the sweep

    def sweep_once(self, now: float | None = None) -> int:
        """Claim up to ``batch`` due clocks and fire their due items in due order; the number
        of clocks claimed (``batch``: there may be more)."""
        now = self.clock() if now is None else now
        claimed_at = self.clock()
        batch = self.store.claim_due(now, self.batch, lease=CLAIM_LEASE_SECONDS, lease_now=claimed_at)
        if not batch:
            return 0
        # A full batch may leave due clocks behind in Redis: an item later than the last one
        # claimed waits for the next round, so catch-up after downtime fires in due order.
        boundary = batch[-1].due_at if len(batch) == self.batch else math.inf
        loaded = self.configs.current(now)
        heap: list[tuple[float, int, int]] = []
        firings: list[_Firing] = []
        for claimed, (clock, ticket) in zip(batch, self.store.claimed_state(batch)):
            firing = self._prepare(claimed, clock, ticket, loaded, now)
            if firing is None:
                continue
            firing.held_until = claimed_at + CLAIM_LEASE_SECONDS
            firings.append(firing)
            heapq.heappush(heap, (firing.items[0][0], firing.items[0][1], len(firings) - 1))
        while heap:
            due, _, index = heapq.heappop(heap)
            firing = firings[index]
            if due > boundary:
                self._commit(firing, due, now)
                continue
            if self.clock() >= firing.held_until - LEASE_RENEW_MARGIN_SECONDS and not self._renew(firing):
                continue
            _, _, item = firing.items[firing.position]
            self._fire(firing, item, due, now)
            firing.fired.append(item.kind)
            firing.position += 1
            # Recorded at once: a sweep that takes the clock over after a stall does not fire
            # it again (only a publish outlasting the whole lease could be fired twice).
            if not self._renew(firing):
                continue
            if firing.position < len(firing.items) and firing.items[firing.position][0] <= now:
                heapq.heappush(heap, (firing.items[firing.position][0], firing.items[firing.position][1], index))
            else:
                following = firing.items[firing.position][0] if firing.position < len(firing.items) else None
                self._commit(firing, following, now)
        return len(batch)

    def _renew(self, firing: _Firing) -> bool:
        """Extend ``firing``'s claim and record what it fired; False (and this sweep leaves the
        clock alone) when it stalled past the lease and another sweep took the clock over."""
        started = self.clock()
        if self.store.extend(firing.claimed, started, firing.fired, lease=CLAIM_LEASE_SECONDS):
            firing.held_until = started + CLAIM_LEASE_SECONDS
            return True
        log.warning("sla_claim_lost", ticket_id=firing.clock.ticket_id, clock=firing.clock.name, fired=firing.fired)
        self._commit(firing, None, self.clock())  # records what it fired; the new holder's lease stays
        return False

    def _commit(self, firing: _Firing, following: float | None, now: float) -> None:
        self.store.commit(firing.clock, firing.fired, following, now, owner=firing.claimed.owner)

    def tick(self, interval: float, max_seconds: float, sleep: Callable[[float], None] = time.sleep) -> int:
        """One timer tick: fire everything due; then, while the next item falls due before the
        next tick, sleep until exactly then and fire it. Items claimed in all."""
        started = self.clock()
        claimed = 0
        while self.clock() - started < max_seconds:
            count = self.sweep_once()
            claimed += count
            if count >= self.batch:
                continue  # a backlog: the next round at once
            head = self.store.next_due_time()
            wait = None if head is None else head - self.clock()
            if wait is None or wait > interval:
                break
            if wait > 0:
                sleep(wait)
        return claimed

    def _prepare(self, claimed: Claimed, clock: Clock | None, ticket: TicketRecord, loaded: Loaded,
                 now: float) -> _Firing | None:
        if clock is None:
            self.store.release(claimed, None)  # expired: nothing behind it
            return None
        if clock.is_open and clock.plan and clock.config_gen != loaded.gen:
            # Recomputed (or left to a replica with the newer config) before anything fires; what
            # is due under the new config fires in this round, the rest is back in the due set at
            # its new due time, so a catch-up still fires in due order.
            try:
                self._change(clock.ticket_id, clock.name, lambda k, _t: (k, None), at=now,
                             trigger=f"gen{loaded.gen}")
            except ConfigBehind:
                self.store.release(claimed, now + BEHIND_RETRY_SECONDS)
                return None
            clock = self.store.clock(clock.ticket_id, clock.name)
            if clock is None:
                self.store.release(claimed, None)
                return None
        calendar = self._calendar(loaded.config, clock.calendar)
        items = c.pending(clock, calendar)
        if not items or items[0][0] > now:
            # Changed since it was scheduled (paused, finished, or a later item is next).
            self.store.commit(clock, [], items[0][0] if items else None, now, owner=claimed.owner)
            return None
        return _Firing(claimed, clock, ticket, calendar, items)

    def _fire(self, firing: _Firing, item: c.PlanItem, due: float, now: float) -> None:
        clock, ticket = firing.clock, firing.ticket
        trace_id = ticket.trace_id or f"sla-{clock.ticket_id}"
        at = _dt(self.clock())
        breach_at = clock.breach_at if clock.breach_at is not None else c.breach_due(clock, firing.calendar)
        common = dict(ticket_id=clock.ticket_id, clock=clock.name, policy=clock.policy,
                      target_seconds=_whole(clock.target), agent_id=ticket.agent_id)
        ids = (clock.ticket_id, clock.name, str(clock.cycle), item.kind)
        if item.role == c.WARNING:
            self.emit(ev.SLA_WARNING, now=at, trace_id=trace_id, due_at=_dt(breach_at or due),
                      elapsed_fraction=item.fraction,
                      event_id=stable_event_id(ev.SLA_WATCHER, ev.SLA_WARNING, *ids), **common)
        elif item.role == c.BREACH:
            self.emit(ev.SLA_BREACHED, now=at, trace_id=trace_id, due_at=_dt(due),
                      event_id=stable_event_id(ev.SLA_WATCHER, ev.SLA_BREACHED, *ids), **common)
            self.emit(ev.SLA_CLOCK_CHANGED, now=at, trace_id=trace_id, change="breached", calendar=clock.calendar,
                      business_seconds_used=c.used_seconds(clock, firing.calendar, until=due), due_at=_dt(due),
                      event_id=stable_event_id(ev.SLA_WATCHER, ev.SLA_CLOCK_CHANGED, *ids), **common)
        else:
            after = item.offset - clock.target
            reason = f"{clock.name} target of {_duration(clock.target)} missed" + (
                f", {_duration(after)} since the breach" if after else "")
            self.emit(ev.TICKET_ESCALATED, now=at, trace_id=trace_id, ticket_id=clock.ticket_id, clock=clock.name,
                      policy=clock.policy, level=item.level, reason=reason, action=item.action, trigger="breach",
                      to_tier=item.to if item.action == "reassign_next_tier" else None,
                      to_priority=item.to if item.action == "raise_priority" else None, agent_id=ticket.agent_id,
                      event_id=stable_event_id(ev.SLA_WATCHER, ev.TICKET_ESCALATED, *ids))
        log.info("sla_item_fired", ticket_id=clock.ticket_id, trace_id=trace_id, clock=clock.name,
                 cycle=clock.cycle, kind=item.kind, agent_id=ticket.agent_id, late_seconds=round(now - due, 3))

    # ------------------------------------------------------------------ recompute walk

    def recompute_step(self, owner: str, *, now: float | None = None, pages: int = 4) -> int:
        """Carry up to ``pages`` pages of open clocks to this replica's config generation, if
        this replica holds (or can take over) the walk; the number of clocks looked at."""
        now = self.clock() if now is None else now
        loaded = self.configs.current(now)
        current, done = self.store.walk_state(loaded.gen)
        if loaded.gen < current:
            loaded = self.configs.refresh(now)
            current, done = self.store.walk_state(loaded.gen)
        if loaded.gen != current or done or not self.store.take_recompute(loaded.gen, owner, now):
            self.tidy_open_step()
            return 0
        # A new config may move items earlier (a shorter target) and the walk takes a while at
        # many clocks (~500 s at 1M): first every scheduled clock is brought forward to now, so
        # the sweep meets each one at once, in its old due order, and recomputes it (_prepare).
        self.store.rescore_due(loaded.gen, now, RESCORE_PAGE)
        seen = 0
        cursor = self.store.recompute_cursor()
        for _ in range(pages):
            cursor, keys = self.store.open_page(cursor, RECOMPUTE_PAGE)
            found = self.store.clocks(keys)
            self.store.forget_open([key for key, clock in zip(keys, found) if clock is None])  # expired
            for clock in found:
                if clock is not None and clock.is_open and clock.plan and clock.config_gen < loaded.gen:
                    try:
                        self._change(clock.ticket_id, clock.name, lambda k, _t: (k, None), at=now,
                                     trigger=f"gen{loaded.gen}")
                    except TransientError:
                        pass  # kept changing or newer: whoever touches it next recomputes it
            seen += len(keys)
            self.store.recompute_progress(loaded.gen, owner, cursor, self.clock())
            if cursor == 0:
                log.info("sla_recompute_finished", gen=loaded.gen)
                break
        return seen

    def tidy_open_step(self) -> int:
        """One bounded page of the slow walk that drops expired clocks (an abandoned ticket
        paused longer than the TTL) from the open set between config changes; the number dropped.
        Replicas share the cursor: a page walked twice only costs a read."""
        return self.store.tidy_open(TIDY_PAGE)

    # ------------------------------------------------------------------ clock changes

    def _start(self, ticket_id: str, name: str, *, at: float, trigger: str, new_cycle: bool = False) -> None:
        self._changes(ticket_id, [self._starter(ticket_id, name, at=at, new_cycle=new_cycle)], at=at, trigger=trigger)

    def _starter(self, ticket_id: str, name: str, *, at: float,
                 new_cycle: bool = False) -> tuple[str, Transition, Create]:
        """Activate ``name`` under the ticket's policy unless it exists (a tombstone included);
        ``new_cycle``: a finished one starts its next cycle."""

        def create(ticket: TicketRecord, loaded: Loaded, cycle: int) -> Clock | None:
            policy = self._policy_for(ticket, loaded.config, None)
            target = policy.target(name) if policy is not None else None
            if policy is None or target is None:
                return None
            plan = c.make_plan(target, policy.warn_at, [(r.after_seconds, r.action, r.to) for r in policy.ladder])
            clock = c.activate(ticket_id=ticket_id, name=name, cycle=cycle, policy=policy.name,
                               calendar=policy.calendar, target=target, plan=plan, at=at, config_gen=loaded.gen)
            if name in c.PAUSABLE and ticket.paused:
                # The ticket waits on the customer (that status was handled first): it ran only
                # until the pause, if the pause came later.
                clock, _ = c.pause(clock, max(at, ticket.paused_at if ticket.paused_at is not None else at))
            return clock

        def transition(clock: Clock, ticket: TicketRecord) -> tuple[Clock, str | None]:
            if not new_cycle or clock.is_open:
                return clock, None
            started = create(ticket, self.configs.current(self.clock()), clock.cycle + 1)
            return (replace(started, rev=clock.rev), "activated") if started is not None else (clock, None)

        return name, transition, lambda ticket, loaded: (create(ticket, loaded, 1), "activated")

    @staticmethod
    def _finisher(ticket_id: str, name: str, state: str, at: float, *,
                  tombstone: bool) -> tuple[str, Transition, Create]:
        def create(_ticket: TicketRecord, _loaded: Loaded) -> tuple[Clock | None, str | None]:
            if not tombstone:
                return None, None
            # Finished before it started: a late start finds this and does nothing.
            return Clock(ticket_id=ticket_id, name=name, cycle=0, state=state, policy="", calendar="always",
                         target=0.0, plan=(), activated_at=at, finished_at=at), None

        return name, lambda clock, _t: c.finish(clock, state, at), create

    def _change(self, ticket_id: str, name: str, transition: Transition, *, at: float, trigger: str,
                create: Create | None = None) -> None:
        self._changes(ticket_id, [(name, transition, create)], at=at, trigger=trigger)

    def _changes(self, ticket_id: str, specs: list[tuple[str, Transition, Create | None]], *, at: float,
                 trigger: str, read: tuple[TicketRecord, list[Clock | None]] | None = None) -> None:
        """Read, decide, announce, write (see the module docstring) for clocks of one ticket, each
        ``(name, transition, create)``: one read and one write round trip for all of them, and
        again for those that met a conflict. ``read``: the ticket and these clocks as just read."""
        for _ in range(CAS_ATTEMPTS):
            now = self.clock()
            loaded = self.configs.current(now)
            if read is None:
                ticket, found = self.store.ticket_and_clocks(ticket_id, [name for name, _, _ in specs])
            else:
                (ticket, found), read = read, None
            decided = []
            for spec, stored in zip(specs, found):
                outcome = self._decide(spec, stored, ticket, loaded, now)
                if outcome is not None:
                    decided.append((spec, *outcome))
            for _spec, clock, changes, calendar in decided:
                for change in changes:
                    self._announce(clock, ticket, change, calendar, at=at, trigger=trigger)
            if not decided:
                return
            revs = self.store.put_clocks([(clock, c.next_due(clock, calendar)) for _, clock, _, calendar in decided],
                                         now=now)
            specs = []
            for (spec, clock, changes, _calendar), rev in zip(decided, revs):
                if rev is None:
                    specs.append(spec)  # written meanwhile: read and decide again
                elif changes:
                    log.info("sla_clock_changed", ticket_id=ticket_id, clock=clock.name, cycle=clock.cycle,
                             changes=changes, policy=clock.policy, state=clock.state, calendar=clock.calendar)
            if not specs:
                return
        raise TransientError(f"sla clock {ticket_id}:{','.join(name for name, _, _ in specs)} kept changing")

    def _decide(self, spec: tuple[str, Transition, Create | None], stored: Clock | None, ticket: TicketRecord,
                loaded: Loaded, now: float) -> tuple[Clock, list[str], BusinessCalendar] | None:
        """The clock to write (with its rev as read) and the changes to announce; None: nothing to write."""
        _name, transition, create = spec
        changes: list[str] = []
        if stored is None:
            if create is None:
                return None
            clock, change = create(ticket, loaded)
            if clock is None:
                return None
            changes += [change] if change else []
            expected = 0
        else:
            expected = stored.rev
            clock, change = self._upgraded(stored, ticket, loaded, now)
            changes += [change] if change else []
            clock, change = transition(clock, ticket)
            changes += [change] if change else []
            clock, change = self._upgraded(clock, ticket, loaded, now)  # e.g. a clock just reopened
            changes += [change] if change else []
            if not changes and clock == stored:
                return None
        calendar = self._calendar(loaded.config, clock.calendar)
        return c.with_derived(replace(clock, rev=expected), calendar), changes, calendar

    def _upgraded(self, clock: Clock, ticket: TicketRecord, loaded: Loaded, now: float) -> tuple[Clock, str | None]:
        """``clock`` under this replica's config generation (recomputed when older)."""
        if not clock.is_open or not clock.plan or clock.config_gen == loaded.gen:
            return clock, None
        if clock.config_gen > loaded.gen:
            loaded = self.configs.refresh(now)
            if clock.config_gen > loaded.gen:
                raise ConfigBehind(f"clock {clock.ticket_id}:{clock.name} has config generation {clock.config_gen}, "
                                   f"this replica {loaded.gen}")
            if clock.config_gen == loaded.gen:
                return clock, None
        policy = self._policy_for(ticket, loaded.config, clock.policy)
        if policy is None:
            return replace(clock, config_gen=loaded.gen), None  # nothing matches now: it keeps its plan
        target = policy.target(clock.name)
        if target is None:  # the policy no longer tracks this clock
            stopped, change = c.finish(clock, c.STOPPED, now)
            return replace(stopped, config_gen=loaded.gen), change
        plan = c.make_plan(target, policy.warn_at, [(r.after_seconds, r.action, r.to) for r in policy.ladder])
        return c.rebase(clock, policy=policy.name, calendar_name=policy.calendar, target=target, plan=plan,
                        config_gen=loaded.gen, calendar=self._calendar(loaded.config, policy.calendar))

    def _announce(self, clock: Clock, ticket: TicketRecord, change: str, calendar: BusinessCalendar, *, at: float,
                  trigger: str) -> None:
        self.emit(ev.SLA_CLOCK_CHANGED, now=_dt(self.clock()), trace_id=ticket.trace_id or f"sla-{clock.ticket_id}",
                  ticket_id=clock.ticket_id, clock=clock.name, change=change, policy=clock.policy,
                  calendar=clock.calendar, target_seconds=_whole(clock.target),
                  business_seconds_used=c.used_seconds(clock, calendar, until=at),
                  due_at=_dt(clock.breach_at) if clock.breach_at is not None else None, agent_id=ticket.agent_id,
                  event_id=stable_event_id(ev.SLA_WATCHER, ev.SLA_CLOCK_CHANGED, clock.ticket_id, clock.name,
                                           str(clock.cycle), change, trigger))

    # ------------------------------------------------------------------ escalations without a breach

    def _second_contact(self, ticket_id: str, noted: Noted) -> None:
        """The customer is back within the policy's window after their last resolution
        (``noted``: what the note that completed the ticket left and read)."""
        ticket = noted.ticket
        if ticket.received_at is None or not ticket.classified:
            return
        previous: tuple[str, float] | None = None
        if ticket.linked_ticket_id:
            linked = noted.linked or self.store.ticket(ticket.linked_ticket_id)
            if linked.resolved_at is not None:
                previous = (ticket.linked_ticket_id, linked.resolved_at)
        if previous is None and ticket.customer:
            previous = noted.last_resolution if noted.customer_known else self.store.last_resolution(ticket.customer)
        if previous is None or previous[0] == ticket_id:
            return
        loaded = self.configs.current(self.clock())
        policy = self._policy_for(ticket, loaded.config, None)
        self._reopen_escalation(ticket, policy, trigger="second_contact", since=previous[1], at=ticket.received_at,
                                key=previous[0],
                                reason=f"second contact {_duration(max(0.0, ticket.received_at - previous[1]))} "
                                       f"after {previous[0]} was resolved")

    def _reopen_escalation(self, ticket: TicketRecord, policy: Policy | None, *, trigger: str, since: float,
                           at: float, key: str, reason: str) -> None:
        if policy is None or not policy.reopen_escalation_seconds or not 0 <= at - since <= policy.reopen_escalation_seconds:
            return
        now = _dt(self.clock())
        for level, rung in enumerate(policy.reopen_actions, start=1):
            self.emit(ev.TICKET_ESCALATED, now=now, trace_id=ticket.trace_id or f"sla-{ticket.ticket_id}",
                      ticket_id=ticket.ticket_id, clock=c.RESOLUTION, policy=policy.name, level=level,
                      reason=reason, action=rung.action, trigger=trigger,
                      to_tier=rung.to if rung.action == "reassign_next_tier" else None,
                      to_priority=rung.to if rung.action == "raise_priority" else None, agent_id=ticket.agent_id,
                      event_id=stable_event_id(ev.SLA_WATCHER, ev.TICKET_ESCALATED, ticket.ticket_id, trigger, key,
                                               str(level)))
        log.info("sla_reopen_escalated", ticket_id=ticket.ticket_id, trace_id=ticket.trace_id, trigger=trigger,
                 policy=policy.name, actions=[r.action for r in policy.reopen_actions])

    # ------------------------------------------------------------------ lookups

    def _clock_policy(self, ticket_id: str) -> str | None:
        clock = self.store.clock(ticket_id, c.RESOLUTION) or self.store.clock(ticket_id, c.FIRST_RESPONSE)
        return clock.policy if clock is not None and clock.policy else None

    @staticmethod
    def _policy_for(ticket: TicketRecord, config: SlaConfig, name: str | None) -> Policy | None:
        """The ticket's policy by its classification; without one (its record expired), by name."""
        if ticket.classified:
            return select_policy(config.policies, priority=ticket.priority or "", channel=ticket.channel or "",
                                 customer_tier=ticket.customer_tier, category=ticket.category)
        for policy in config.policies:
            if policy.name == name:
                return policy
        return None

    @staticmethod
    def _calendar(config: SlaConfig, name: str) -> BusinessCalendar:
        # Every calendar a policy names exists (load_sla_config checks); "always" for tombstones.
        return config.calendar(name) or ALWAYS


def _whole(seconds: float) -> int:
    return int(round(seconds))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds % 3600 == 0 and seconds:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0 and seconds:
        return f"{seconds // 60}min"
    return f"{seconds}s"
