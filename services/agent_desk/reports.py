"""Supervisor reports computed from tickets' report facts (pure: no Redis, no aiohttp; ``now`` passed in).

What a report counts:

- **Which tickets:** those *received* in the period (``from`` inclusive, ``to`` exclusive). Every
  figure of a ticket (its first response, resolution, breaches, escalations, CSAT) counts in
  the period, day and row of its arrival, so a day's row does not change its population when
  its tickets are answered later; it fills in as they are.
- **Rows** (``by``): ``agent`` = the last agent who took the ticket (accepted it, or was assigned
  it without an offer), answered or resolved it (``None``: nobody did); ``group`` = the ticket's routing group (the last
  one set by classification, routing or a transfer; ``None``: no group); ``channel``; ``day``
  = the day it was received, in the report's time zone.
- **Times are wall-clock**, from ``received_at`` to the first agent reply / to the last
  resolution (a reopened ticket is not resolved until it is resolved again). Business hours
  and paused statuses are not taken out: that is the SLA clocks' job, and the SLA figures
  follow them. Percentiles are nearest-rank (p50 of 1, 2, 3, 4 is 2).
- **SLA attainment:** a clock breached if it was ever breached (``sla_breached`` or a
  ``breached`` clock change), met if it was fulfilled and never breached; still running or
  stopped: not counted. A ticket met its SLA when at least one clock was met and none
  breached; attainment = met / (met + breached).
- **Breaches** are counted per clock (a next-response clock can breach more than once);
  **escalations** are ``ticket_escalated`` events (each rung of a ladder is one).
- **CSAT**: the score of each ticket that was rated (1-5): count, average, distribution.
- **Backlog by skill** is *now*, not the period: open tickets (received, not resolved, or
  reopened) by required skills.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Any, Iterable, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

GROUPINGS = ("agent", "group", "channel", "day")
CLOCKS = ("first_response", "next_response", "resolution")
DEFAULT_DAYS = 7
MAX_DAYS = 366
# First-response time buckets (upper bounds, seconds; the last is open-ended).
RESPONSE_BUCKETS = (60, 5 * 60, 15 * 60, 3600, 4 * 3600, 24 * 3600, None)
SKILL_NONE = "general"


class ReportError(ValueError):
    """A report request that cannot be answered (bad period, grouping or time zone)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class TicketFacts:
    ticket_id: str
    received_at: float | None = None
    channel: str | None = None
    group: str | None = None
    priority: str | None = None
    tier: str | None = None
    customer_tier: str | None = None
    skills: str = SKILL_NONE
    first_agent: str | None = None
    agent: str | None = None
    first_response_at: float | None = None
    resolved_at: float | None = None
    reopened_at: float | None = None
    status: str | None = None
    escalations: int = 0
    csat: int | None = None
    breaches: Mapping[str, int] = field(default_factory=dict)   # per clock
    met: Mapping[str, int] = field(default_factory=dict)        # per clock: times fulfilled

    @property
    def resolved(self) -> bool:
        return self.resolved_at is not None and (self.reopened_at is None or self.reopened_at <= self.resolved_at)

    @property
    def first_response_seconds(self) -> float | None:
        if self.first_response_at is None or self.received_at is None:
            return None
        return max(0.0, self.first_response_at - self.received_at)

    @property
    def resolution_seconds(self) -> float | None:
        if not self.resolved or self.received_at is None:
            return None
        return max(0.0, self.resolved_at - self.received_at)  # type: ignore[operator]

    def clock_outcome(self, clock: str) -> str | None:
        if self.breaches.get(clock, 0):
            return "breached"
        return "met" if self.met.get(clock, 0) else None

    @property
    def sla_outcome(self) -> str | None:
        outcomes = {self.clock_outcome(c) for c in CLOCKS}
        return "breached" if "breached" in outcomes else "met" if "met" in outcomes else None


def _float(raw: str | None) -> float | None:
    try:
        return float(raw) if raw not in (None, "") else None
    except ValueError:
        return None


def _int(raw: str | None) -> int:
    try:
        return int(raw) if raw else 0
    except ValueError:
        return 0


def facts_from_hash(h: Mapping[str, str]) -> TicketFacts:
    """The stored facts hash (``history_store``) → :class:`TicketFacts`."""
    breaches = {c: max(_int(h.get(f"breached:{c}")), _int(h.get(f"clock_breached:{c}"))) for c in CLOCKS}
    csat = _int(h.get("csat"))
    return TicketFacts(
        ticket_id=h["ticket_id"], received_at=_float(h.get("received_at")), channel=h.get("channel") or None,
        group=h.get("group") or None, priority=h.get("priority") or None, tier=h.get("tier") or None,
        customer_tier=h.get("customer_tier") or None, skills=h.get("skills") or SKILL_NONE,
        first_agent=h.get("first_agent") or None, agent=h.get("agent") or None,
        first_response_at=_float(h.get("first_response_at")), resolved_at=_float(h.get("resolved_at")),
        reopened_at=_float(h.get("reopened_at")), status=h.get("status") or None,
        escalations=_int(h.get("escalations")), csat=csat if 1 <= csat <= 5 else None,
        breaches={c: n for c, n in breaches.items() if n},
        met={c: _int(h.get(f"met:{c}")) for c in CLOCKS if _int(h.get(f"met:{c}"))},
    )


# --- the period ------------------------------------------------------------------------------

def zone(name: str) -> tzinfo:
    if name.upper() == "UTC":
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ReportError("invalid_timezone", f"unknown time zone {name!r} (e.g. UTC, Asia/Shanghai)") from None


def _bound(raw: str, tz: tzinfo, *, end: bool) -> datetime:
    """``YYYY-MM-DD`` is that whole day in ``tz`` (an end date is included); an ISO-8601
    time without an offset is in ``tz``."""
    try:
        if len(raw) == 10:
            day = date.fromisoformat(raw)
            return datetime.combine(day + timedelta(days=1 if end else 0), time(), tz)
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ReportError("invalid_period", f"{raw!r} is neither a date (YYYY-MM-DD) nor an ISO-8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=tz)


def period(start: str | None, end: str | None, tz: tzinfo, now: datetime) -> tuple[datetime, datetime]:
    """[start, end) from the request; by default the last ``DEFAULT_DAYS`` days, today included."""
    today = now.astimezone(tz).date()
    hi = _bound(end, tz, end=True) if end else datetime.combine(today + timedelta(days=1), time(), tz)
    lo = _bound(start, tz, end=False) if start else \
        datetime.combine(hi.astimezone(tz).date() - timedelta(days=DEFAULT_DAYS), time(), tz)
    if lo >= hi:
        raise ReportError("invalid_period", "the period ends before it starts")
    if hi - lo > timedelta(days=MAX_DAYS):
        raise ReportError("invalid_period", f"a report covers at most {MAX_DAYS} days")
    return lo, hi


# --- figures ---------------------------------------------------------------------------------

def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of ``values`` (sorted or not); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _times(values: list[float]) -> dict[str, Any]:
    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 1)
    return {"count": len(values), "p50_seconds": r(percentile(values, 50)), "p90_seconds": r(percentile(values, 90)),
            "average_seconds": r(sum(values) / len(values)) if values else None}


def _attainment(met: int, breached: int) -> float | None:
    return round(100 * met / (met + breached), 1) if met + breached else None


def csat_summary(tickets: Iterable[TicketFacts]) -> dict[str, Any]:
    scores = [t.csat for t in tickets if t.csat is not None]
    counts = Counter(scores)
    return {"count": len(scores), "average": round(sum(scores) / len(scores), 2) if scores else None,
            "distribution": {str(s): counts.get(s, 0) for s in range(1, 6)}}


def figures(tickets: list[TicketFacts]) -> dict[str, Any]:
    """Every figure for one set of tickets (a row, or the totals)."""
    outcomes = Counter(t.sla_outcome for t in tickets)
    clocks = {}
    for clock in CLOCKS:
        per = Counter(t.clock_outcome(clock) for t in tickets)
        if per["met"] or per["breached"]:
            clocks[clock] = {"met": per["met"], "breached": per["breached"],
                             "attainment": _attainment(per["met"], per["breached"])}
    breaches = {c: sum(t.breaches.get(c, 0) for t in tickets) for c in CLOCKS}
    return {
        "tickets": len(tickets),
        "resolved": sum(1 for t in tickets if t.resolved),
        "open": sum(1 for t in tickets if not t.resolved),
        "first_response": _times([s for t in tickets if (s := t.first_response_seconds) is not None]),
        "resolution": _times([s for t in tickets if (s := t.resolution_seconds) is not None]),
        "sla": {"met": outcomes["met"], "breached": outcomes["breached"],
                "attainment": _attainment(outcomes["met"], outcomes["breached"]), "clocks": clocks},
        "breaches": {**{c: n for c, n in breaches.items() if n}, "total": sum(breaches.values())},
        "escalations": sum(t.escalations for t in tickets),
        "escalated_tickets": sum(1 for t in tickets if t.escalations),
        "csat": csat_summary(tickets),
    }


def response_buckets(tickets: Iterable[TicketFacts]) -> list[dict[str, Any]]:
    """How many first responses fell in each bucket of :data:`RESPONSE_BUCKETS`."""
    counts = [0] * len(RESPONSE_BUCKETS)
    for t in tickets:
        seconds = t.first_response_seconds
        if seconds is None:
            continue
        counts[next(i for i, upper in enumerate(RESPONSE_BUCKETS) if upper is None or seconds < upper)] += 1
    lower = (0, *RESPONSE_BUCKETS[:-1])
    return [{"from_seconds": lo, "to_seconds": hi, "count": n} for lo, hi, n in zip(lower, RESPONSE_BUCKETS, counts)]


def backlog(open_tickets: Iterable[TicketFacts], now: datetime) -> list[dict[str, Any]]:
    """Open tickets by required skills: how many, the oldest's age, per channel; most first."""
    by_skill: dict[str, list[TicketFacts]] = {}
    for t in open_tickets:
        if not t.resolved and t.received_at is not None:
            by_skill.setdefault(t.skills, []).append(t)
    rows = [{"skill": skill, "open": len(ts),
             "oldest_seconds": round(now.timestamp() - min(t.received_at for t in ts), 1),  # type: ignore[type-var]
             "by_channel": dict(sorted(Counter(t.channel or "unknown" for t in ts).items()))}
            for skill, ts in by_skill.items()]
    return sorted(rows, key=lambda r: (-r["open"], r["skill"]))


def _day(t: TicketFacts, tz: tzinfo) -> str:
    return datetime.fromtimestamp(t.received_at, tz).date().isoformat()  # type: ignore[arg-type]


def _key(t: TicketFacts, by: str, tz: tzinfo) -> str | None:
    if by == "day":
        return _day(t, tz)
    return {"agent": t.agent, "group": t.group, "channel": t.channel}[by]


def _days(start: datetime, end: datetime, tz: tzinfo) -> list[str]:
    first, last = start.astimezone(tz).date(), (end - timedelta(microseconds=1)).astimezone(tz).date()
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def build(facts: Iterable[TicketFacts], *, start: datetime, end: datetime, by: str, tz: tzinfo,
          open_tickets: Iterable[TicketFacts], now: datetime) -> dict[str, Any]:
    """The report: totals, one row per ``by`` key, SLA attainment per day, the response-time
    distribution, the backlog by skill now, and CSAT."""
    if by not in GROUPINGS:
        raise ReportError("invalid_grouping", f"by is one of {', '.join(GROUPINGS)}")
    lo, hi = start.timestamp(), end.timestamp()
    tickets = [t for t in facts if t.received_at is not None and lo <= t.received_at < hi]
    days = _days(start, end, tz)
    groups: dict[str | None, list[TicketFacts]] = {d: [] for d in days} if by == "day" else {}
    for t in tickets:
        groups.setdefault(_key(t, by, tz), []).append(t)
    by_day: dict[str, list[TicketFacts]] = {d: [] for d in days}
    for t in tickets:
        by_day.setdefault(_day(t, tz), []).append(t)
    sla_by_day = []
    for day in days:
        outcomes = Counter(t.sla_outcome for t in by_day[day])
        sla_by_day.append({"day": day, "tickets": len(by_day[day]), "met": outcomes["met"],
                           "breached": outcomes["breached"],
                           "attainment": _attainment(outcomes["met"], outcomes["breached"])})
    ordered = sorted(groups, key=lambda k: (k is None, k or ""))
    return {
        "period": {"from": start.isoformat(), "to": end.isoformat(), "timezone": str(tz), "by": by},
        "generated_at": now.isoformat(),
        "time_basis": "wall",
        "totals": figures(tickets),
        "rows": [{"key": key, **figures(groups[key])} for key in ordered],
        "sla_by_day": sla_by_day,
        "response_time_distribution": response_buckets(tickets),
        "backlog_by_skill": backlog(open_tickets, now),
    }


def report(received: Iterable[Mapping[str, str]], open_now: Iterable[Mapping[str, str]], *, start: datetime,
           end: datetime, by: str, tz: tzinfo, now: datetime) -> dict[str, Any]:
    """:func:`build` from stored facts hashes (what the store returns)."""
    # A contact folded into an open ticket (ticket_attached) is that ticket's, not one of its own.
    return build([facts_from_hash(h) for h in received if not h.get("attached_to")], start=start, end=end, by=by,
                 tz=tz, open_tickets=[facts_from_hash(h) for h in open_now if not h.get("attached_to")], now=now)


def summary(facts: TicketFacts) -> dict[str, Any]:
    """One ticket's facts as the history API and ``ticketmesh trace`` show them."""
    def iso(epoch: float | None) -> str | None:
        return None if epoch is None else datetime.fromtimestamp(epoch, timezone.utc).isoformat()
    return {
        "received_at": iso(facts.received_at), "channel": facts.channel, "group": facts.group,
        "priority": facts.priority, "tier": facts.tier, "customer_tier": facts.customer_tier, "skills": facts.skills,
        "first_agent": facts.first_agent, "agent": facts.agent, "status": facts.status,
        "first_response_at": iso(facts.first_response_at), "first_response_seconds": facts.first_response_seconds,
        "resolved": facts.resolved, "resolved_at": iso(facts.resolved_at) if facts.resolved else None,
        "resolution_seconds": facts.resolution_seconds, "reopened_at": iso(facts.reopened_at),
        "breaches": dict(facts.breaches), "sla": facts.sla_outcome, "escalations": facts.escalations,
        "csat": facts.csat,
    }
