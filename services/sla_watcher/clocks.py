"""SLA clocks (pure): state, transitions, and when each of a clock's items falls due.

A clock is one target on one ticket (``first_response``, ``next_response``, ``resolution``).
It is a history, not a countdown: the wall-clock intervals during which it ran (``segments``,
plus the open one from ``since``). Business seconds used are the calendar's business time
inside those intervals, so a change of policy or calendar replays the same history under the
new rules and lands on the same answer on every replica, whenever it runs (deterministic
recompute). Times are epoch seconds (floats: sub-second precision).

A clock's *plan* is its items, each at a business-second offset from the clock's start:
warnings at ``fraction * target``, the breach at ``target``, and the escalation ladder's rungs
at ``target + after``. An item falls due where the calendar reaches its offset, counted from the
open segment's start with what earlier segments used. ``fired`` names the items already fired
in this cycle, so nothing fires twice however often the clock is recomputed, paused or resumed.

Transitions return the new clock and the change to announce (``SlaClockChanged.change``), or
None when the event changes nothing (a redelivery, or an event that does not apply).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Iterable, Protocol, Sequence

FIRST_RESPONSE, NEXT_RESPONSE, RESOLUTION = "first_response", "next_response", "resolution"
CLOCK_NAMES = (FIRST_RESPONSE, NEXT_RESPONSE, RESOLUTION)
# A status with the pause flag stops these; first response is owed whatever the status.
PAUSABLE = frozenset({NEXT_RESPONSE, RESOLUTION})

RUNNING, PAUSED, FULFILLED, STOPPED = "running", "paused", "fulfilled", "stopped"
OPEN_STATES = frozenset({RUNNING, PAUSED})

BREACHED = "breached"
WARNING_PREFIX = "warning@"
RUNG_PREFIX = "esc@"

WARNING, BREACH, RUNG = "warning", "breach", "rung"


class Calendar(Protocol):
    """What clocks need of shared.business_calendar.BusinessCalendar."""

    def add_epoch(self, t: float, seconds: float) -> float: ...

    def between_epoch(self, start: float, end: float) -> float: ...


@dataclass(frozen=True)
class PlanItem:
    kind: str               # "warning@0.5", "breached", "esc@1800:raise_priority:P1"
    offset: float           # business seconds after the clock started
    action: str | None = None   # rungs: the escalation action
    to: str | None = None       # rungs: the priority or tier it names
    level: int = 0              # rungs: 1-based position in the ladder

    @property
    def role(self) -> str:
        if self.kind == BREACHED:
            return BREACH
        return WARNING if self.kind.startswith(WARNING_PREFIX) else RUNG

    @property
    def fraction(self) -> float:
        """Warnings: the share of the target used when it falls due."""
        return float(self.kind[len(WARNING_PREFIX):]) if self.role == WARNING else 1.0


def warning_kind(fraction: float) -> str:
    return f"{WARNING_PREFIX}{fraction:g}"


def rung_kind(after: float, action: str, to: str | None) -> str:
    # Identity of a rung across recomputes: the same step at the same offset is the same item.
    return f"{RUNG_PREFIX}{after:g}:{action}" + (f":{to}" if to else "")


def make_plan(target: float, warn_at: Iterable[float], ladder: Iterable[tuple[float, str, str | None]]
              ) -> tuple[PlanItem, ...]:
    """Warnings (increasing), the breach, then the rungs in ladder order."""
    items = [PlanItem(warning_kind(f), f * target) for f in sorted(set(warn_at)) if 0 < f < 1]
    items.append(PlanItem(BREACHED, float(target)))
    for level, (after, action, to) in enumerate(ladder, start=1):
        items.append(PlanItem(rung_kind(after, action, to), float(target) + after, action, to, level))
    return tuple(items)


def plan_json(plan: Sequence[PlanItem]) -> str:
    return json.dumps([[i.kind, i.offset, i.action, i.to, i.level] for i in plan], separators=(",", ":"))


def plan_from_json(text: str) -> tuple[PlanItem, ...]:
    return tuple(PlanItem(kind, float(offset), action, to, int(level)) for kind, offset, action, to, level
                 in json.loads(text))


def plan_digest(plan: Sequence[PlanItem]) -> str:
    """Content address of a plan: many clocks share a few plans, stored once."""
    return hashlib.sha256(plan_json(plan).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Clock:
    ticket_id: str
    name: str
    cycle: int                      # next_response: +1 per customer message that starts it again
    state: str
    policy: str
    calendar: str
    target: float                   # business seconds
    plan: tuple[PlanItem, ...]
    segments: tuple[tuple[float, float], ...] = ()
    since: float | None = None      # start of the open segment (running), else None
    fired: frozenset[str] = frozenset()
    activated_at: float = 0.0
    finished_at: float | None = None
    config_gen: int = 0             # the config generation its plan and calendar come from
    rev: int = 0                    # the store's revision when read (0: not stored)
    # Derived when written (with_derived): what an observer last saw, so a recompute can tell
    # whether it changed anything without the calendar the clock was computed with.
    used: float = 0.0               # business seconds of the closed segments
    breach_at: float | None = None  # the breach time while running

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    def item(self, kind: str) -> PlanItem | None:
        for item in self.plan:
            if item.kind == kind:
                return item
        return None


def used_seconds(clock: Clock, calendar: Calendar, until: float | None = None) -> float:
    """Business seconds used: closed segments, plus the open one up to ``until`` when given."""
    used = sum(calendar.between_epoch(start, end) for start, end in clock.segments)
    if clock.since is not None and until is not None and until > clock.since:
        used += calendar.between_epoch(clock.since, until)
    return used


def due_at(clock: Clock, item: PlanItem, calendar: Calendar, used_before: float | None = None) -> float | None:
    """When ``item`` falls due on a running clock (None when not running). An offset already
    used up when the segment opened is due at its start: overdue, it fires at once."""
    if clock.state != RUNNING or clock.since is None:
        return None
    used = used_seconds(clock, calendar) if used_before is None else used_before
    remaining = item.offset - used
    return clock.since if remaining <= 0 else calendar.add_epoch(clock.since, remaining)


def breach_due(clock: Clock, calendar: Calendar) -> float | None:
    """The breach time while running (the ``due_at`` every clock change announces)."""
    item = clock.item(BREACHED)
    return due_at(clock, item, calendar) if item is not None else None


def pending(clock: Clock, calendar: Calendar) -> list[tuple[float, int, PlanItem]]:
    """The items not fired yet with their due times, earliest first (plan order breaks ties)."""
    if clock.state != RUNNING:
        return []
    used = used_seconds(clock, calendar)
    out = []
    for index, item in enumerate(clock.plan):
        if item.kind in clock.fired:
            continue
        due = due_at(clock, item, calendar, used)
        if due is not None:
            out.append((due, index, item))
    out.sort(key=lambda entry: (entry[0], entry[1]))
    return out


def next_due(clock: Clock, calendar: Calendar) -> float | None:
    """The due time of the clock's next unfired item (what the due set holds), or None."""
    items = pending(clock, calendar)
    return items[0][0] if items else None


# --------------------------------------------------------------------------- transitions

def activate(*, ticket_id: str, name: str, cycle: int, policy: str, calendar: str, target: float,
             plan: tuple[PlanItem, ...], at: float, config_gen: int) -> Clock:
    return Clock(ticket_id=ticket_id, name=name, cycle=cycle, state=RUNNING, policy=policy, calendar=calendar,
                 target=target, plan=plan, since=at, activated_at=at, config_gen=config_gen)


def pause(clock: Clock, at: float) -> tuple[Clock, str | None]:
    if clock.state != RUNNING or clock.since is None:
        return clock, None
    end = max(at, clock.since)
    return replace(clock, state=PAUSED, segments=clock.segments + ((clock.since, end),), since=None), "paused"


def resume(clock: Clock, at: float) -> tuple[Clock, str | None]:
    if clock.state != PAUSED:
        return clock, None
    last_end = clock.segments[-1][1] if clock.segments else clock.activated_at
    return replace(clock, state=RUNNING, since=max(at, last_end)), "resumed"


def finish(clock: Clock, state: str, at: float) -> tuple[Clock, str | None]:
    """Fulfil or stop an open clock (its open segment closes at ``at``)."""
    if clock.state not in OPEN_STATES:
        return clock, None
    segments = clock.segments
    if clock.since is not None:
        segments += ((clock.since, max(at, clock.since)),)
    change = "fulfilled" if state == FULFILLED else "stopped"
    return replace(clock, state=state, segments=segments, since=None, finished_at=at), change


def reopen(clock: Clock, at: float, *, paused: bool) -> tuple[Clock, str | None]:
    """A resolved ticket is open again: its resolution clock goes on from where it stopped
    (same cycle: what fired before does not fire again)."""
    if clock.state in OPEN_STATES:
        return clock, None
    last_end = clock.segments[-1][1] if clock.segments else clock.activated_at
    if paused:
        return replace(clock, state=PAUSED, since=None, finished_at=None), "resumed"
    return replace(clock, state=RUNNING, since=max(at, last_end), finished_at=None), "resumed"


def mark_fired(clock: Clock, kinds: Iterable[str]) -> Clock:
    return replace(clock, fired=clock.fired | frozenset(kinds))


def with_derived(clock: Clock, calendar: Calendar) -> Clock:
    return replace(clock, used=used_seconds(clock, calendar), breach_at=breach_due(clock, calendar))


def rebase(clock: Clock, *, policy: str, calendar_name: str, target: float, plan: tuple[PlanItem, ...],
           config_gen: int, calendar: Calendar) -> tuple[Clock, str | None]:
    """The clock under another config: same history, the new policy's target, plan and
    calendar. ``recomputed`` when anything an observer sees changed (the breach time and the
    business seconds used included), compared with what was stored."""
    new = with_derived(replace(clock, policy=policy, calendar=calendar_name, target=target, plan=plan,
                               config_gen=config_gen), calendar)
    before = (clock.policy, clock.calendar, clock.target, clock.plan, _rounded(clock.breach_at), round(clock.used, 3))
    after = (new.policy, new.calendar, new.target, new.plan, _rounded(new.breach_at), round(new.used, 3))
    return new, ("recomputed" if before != after else None)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
