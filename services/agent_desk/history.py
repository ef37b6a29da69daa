"""A ticket's event history and report facts, derived from the mesh's events (pure: no Redis, no aiohttp).

agent_desk records every ticket event of every exchange (:data:`RECORDED`). For each one,
:func:`entry_of` gives

- a compact **record** for the ticket's path (``ticketmesh trace``, ``GET /api/v1/tickets/{id}/history``):
  type, source service, ``occurred_at``, ``event_id``, ``trace_id`` and a few key fields named
  in :data:`_FIELDS`. Never a message body, subject, customer name, agent-written reason or
  note; addresses are masked;
- the **fact updates** it makes to the ticket's report facts (channel, group, priority, agents,
  received / first response / resolution times, breaches per clock, escalations, CSAT ...).
  Each update says how it combines with what is stored, so events applied in any order (each
  event type arrives on its own queue) give the same facts: ``first`` / ``last`` keep the value
  of the earliest / latest event (by ``occurred_at``), ``min`` / ``max`` keep the smallest /
  largest value, ``incr`` counts. The store applies an event once (by ``event_id``).

Events without a ticket (``agent_presence_changed``, ``mail_rejected``, a ``mail_bounced`` that
names none) are not part of any ticket's path and are not recorded; nor are the typing signals
(:data:`EPHEMERAL`: ``chat_typing``, ``agent_typing``): one every few seconds while someone
types, they say nothing about the ticket's path, and the per-ticket record cap would trim its
real events to keep them. A chat's transcript request and its missed-reply mail are recorded.

:func:`path` turns stored records into the ticket's path: in time order, with the gap since
the previous event, the longest gap, and the records whose ``trace_id`` differs from the
ticket's.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterable

from shared import events as ev
from shared.logging import mask, mask_email

# Ticket events that are signals, not history (module docstring).
EPHEMERAL: frozenset[tuple[str, str]] = frozenset({(ev.INTAKE_CHAT, ev.CHAT_TYPING), (ev.AGENT_DESK, ev.AGENT_TYPING)})

# Every (source, event type) that names a ticket, but the ephemeral ones.
RECORDED: tuple[tuple[str, str], ...] = tuple(
    key for key, schema in ev.SCHEMAS.items()
    if (issubclass(schema, ev.TicketEvent) or key == (ev.INTAKE_EMAIL, ev.MAIL_BOUNCED)) and key not in EPHEMERAL
)

SKILL_NONE = "general"       # tickets that need no particular skill (as on the supervisor board)
TEXT_FIELD_CHARS = 160       # system-written reasons kept in a record


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _skills(skills: Iterable[str]) -> str:
    return "+".join(sorted(skills)) or SKILL_NONE


def _short(text: str) -> str:
    text = mask_email(" ".join(text.split()))
    return text if len(text) <= TEXT_FIELD_CHARS else text[:TEXT_FIELD_CHARS - 1] + "…"


# Key fields kept per event type: a name, or (name, getter). None values are left out. Only
# system-written strings; free text an agent or customer typed never goes in.
Getter = Callable[[Any], Any]
_FIELDS: dict[str, tuple[str | tuple[str, Getter], ...]] = {
    ev.TICKET_RECEIVED: ("channel", ("received_at", lambda e: _iso(e.received_at)),
                         ("customer_tier", lambda e: e.customer.tier), ("language", lambda e: e.customer.language),
                         ("attachments", lambda e: len(e.attachments) or None), "linked_ticket_id"),
    ev.MESSAGE_RECEIVED: ("channel", "message_id", ("attachments", lambda e: len(e.attachments) or None)),
    ev.TICKET_ATTACHED: ("into_ticket_id", "channel", "mode", "customer_id"),
    ev.TICKET_CLASSIFIED: ("priority", ("skills", lambda e: _skills(e.required_skills)), "language", "group",
                           "category", "customer_tier", ("signals", lambda e: list(e.signals) or None)),
    ev.TICKET_ASSIGNED: ("agent_id", "attempt", "priority", "tier", "group", ("step", lambda e: e.decision.step),
                         ("offer_expires_at", lambda e: _iso(e.offer_expires_at))),
    ev.TICKET_QUEUED: ("priority", "tier", "group", ("skills", lambda e: _skills(e.required_skills)),
                       ("reason", lambda e: _short(e.reason)),
                       ("step", lambda e: e.decision.step if e.decision else None)),
    ev.TICKET_UNASSIGNED: ("agent_id", "reason", "by"),
    ev.TICKET_DECLINED: ("agent_id", "attempt"),
    ev.TICKET_TRANSFER_REQUESTED: ("kind", "requested_by", "to_agent_id", "to_group"),
    ev.TICKET_TRANSFERRED: ("kind", "requested_by", "from_agent_id", "to_agent_id", "to_group", "outcome"),
    ev.TICKET_REOPENED: ("by", "agent_id", "channel"),
    ev.TICKET_ESCALATED: ("clock", "policy", "level", "action", "trigger", "to_tier", "to_priority", "agent_id",
                          ("reason", lambda e: _short(e.reason))),
    ev.TICKET_STATUS_CHANGED: ("status", "previous", "paused", "agent_id"),
    ev.SLA_CLOCK_CHANGED: ("clock", "change", "policy", "calendar", "target_seconds",
                           ("business_seconds_used", lambda e: round(e.business_seconds_used, 1)),
                           ("due_at", lambda e: _iso(e.due_at)), "agent_id"),
    ev.CSAT_SUBMITTED: ("score", "channel", "agent_id"),
    ev.NOTIFICATION_FAILED: ("notification_id", "kind", ("recipient", lambda e: mask(e.recipient)), "permanent",
                             "attempts", ("reason", lambda e: _short(e.reason))),
    ev.AGENT_REPLIED: ("agent_id", "channel", "reply_id"),
    ev.TICKET_ACCEPTED: ("agent_id", "attempt"),
    ev.TICKET_RESOLVED: ("agent_id", "channel", "resolution"),
    ev.SLA_WARNING: ("clock", "policy", ("due_at", lambda e: _iso(e.due_at)), "agent_id",
                     ("elapsed_fraction", lambda e: round(e.elapsed_fraction, 3))),
    ev.SLA_BREACHED: ("clock", "policy", "target_seconds", ("due_at", lambda e: _iso(e.due_at)), "agent_id"),
    ev.NOTIFICATION_SENT: ("notification_id", "kind", ("recipient", lambda e: mask(e.recipient))),
    ev.TICKET_ATTACHED: ("into_ticket_id", "channel", "mode", "customer_id"),
    ev.MAIL_BOUNCED: ("hard", "status", ("recipients", lambda e: [mask(r) for r in e.recipients])),
    ev.CHAT_TRANSCRIPT_REQUESTED: (("to", lambda e: mask(e.to)), ("entries", lambda e: len(e.entries))),
    ev.CHAT_REPLY_MISSED: (("to", lambda e: mask(e.to)), ("replies", lambda e: len(e.replies)), "up_to_seq"),
}


@dataclass(frozen=True)
class FactUpdate:
    """How one event changes one report fact (see the module docstring for ``op``)."""
    op: str        # first | last | min | max | incr
    field: str
    value: str

    def __post_init__(self) -> None:
        assert self.op in ("first", "last", "min", "max", "incr"), self.op


@dataclass(frozen=True)
class Entry:
    """What recording one event writes."""
    ticket_id: str
    event_id: str
    occurred_at: float             # epoch seconds: the record's place on the path
    record: str                    # compact JSON
    updates: tuple[FactUpdate, ...] = ()
    received_at: float | None = None   # when the event says when the ticket arrived (the day index)
    trace_id: str | None = None        # set on ticket_received: a trace id finds its ticket


def _num(value: datetime | float) -> str:
    return repr(round(value.timestamp() if isinstance(value, datetime) else value, 3))


def _updates(event_type: str, e: Any) -> list[FactUpdate]:
    u: list[FactUpdate] = []

    def add(op: str, name: str, value: Any) -> None:
        if value is not None and value != "":
            u.append(FactUpdate(op, name, str(value)))

    at = _num(e.occurred_at)
    channel = getattr(e, "channel", None)
    add("first", "channel", channel)
    if event_type == ev.TICKET_RECEIVED:
        add("min", "received_at", _num(e.received_at))
        add("first", "trace_id", e.trace_id)
        add("last", "customer_tier", e.customer.tier)
        if ev.resolved_at_intake(e.source):
            # A call resolved while the customer was on the line: no ticket_resolved follows.
            agent_id = e.source.get("agent_id") or None
            add("max", "resolved_at", _num(e.received_at))
            add("last", "resolution", "solved")
            add("last", "resolved_by", agent_id)
            add("last", "agent", agent_id)
    elif event_type == ev.MESSAGE_RECEIVED:
        add("incr", "messages", 1)
    elif event_type == ev.TICKET_CLASSIFIED:
        add("min", "received_at", _num(e.received_at))
        add("last", "priority", e.priority)
        add("last", "skills", _skills(e.required_skills))
        add("last", "group", e.group)
        add("last", "customer_tier", e.customer_tier)
    elif event_type in (ev.TICKET_ASSIGNED, ev.TICKET_QUEUED):
        if event_type == ev.TICKET_ASSIGNED:
            add("first", "first_agent", e.agent_id)
            if e.offer_expires_at is None:
                # Held at once. An offer is the agent's only once accepted: a declined or
                # expired offer does not make the ticket theirs in the reports.
                add("last", "agent", e.agent_id)
            add("incr", "assignments", 1)
        elif e.received_at is not None:
            add("min", "received_at", _num(e.received_at))
        add("last", "priority", e.priority)
        add("last", "skills", _skills(e.required_skills))
        add("last", "group", e.group)
        add("last", "tier", e.tier)
    elif event_type == ev.TICKET_TRANSFERRED:
        if e.outcome != "rejected":
            add("incr", "transfers", 1)
            add("last", "group", e.to_group)
    elif event_type == ev.TICKET_DECLINED:
        add("incr", "declines", 1)
    elif event_type == ev.TICKET_REOPENED:
        add("max", "reopened_at", at)
        add("incr", "reopens", 1)
    elif event_type == ev.TICKET_ESCALATED:
        add("incr", "escalations", 1)
        add("last", "priority", e.to_priority)
        add("last", "tier", e.to_tier)
    elif event_type == ev.TICKET_STATUS_CHANGED:
        add("last", "status", e.status)
    elif event_type == ev.SLA_CLOCK_CHANGED:
        # A breach is announced as sla_breached and as a clock change: counted apart, and the
        # report takes the larger count, so either one alone still counts.
        counter = {"activated": "active", "fulfilled": "met", "breached": "clock_breached"}.get(e.change)
        if counter:
            add("incr", f"{counter}:{e.clock}", 1)
    elif event_type == ev.SLA_BREACHED:
        add("incr", f"breached:{e.clock}", 1)
    elif event_type == ev.SLA_WARNING:
        add("incr", f"warned:{e.clock}", 1)
    elif event_type == ev.CSAT_SUBMITTED:
        add("last", "csat", e.score)
        add("last", "csat_agent", e.agent_id)
    elif event_type == ev.NOTIFICATION_FAILED:
        add("incr", "notifications_failed", 1)
    elif event_type == ev.MAIL_BOUNCED:
        add("incr", "bounces", 1)
    elif event_type == ev.AGENT_REPLIED:
        add("min", "first_response_at", at)
        add("first", "first_responder", e.agent_id)
        add("last", "agent", e.agent_id)
        add("incr", "replies", 1)
    elif event_type == ev.TICKET_ACCEPTED:
        add("last", "agent", e.agent_id)
    elif event_type == ev.TICKET_ATTACHED and e.mode == "attach":
        # The contact became a message on another open ticket: not a ticket of its own, so it
        # leaves the backlog and the reports (which count the ticket it joined).
        add("last", "attached_to", e.into_ticket_id)
        add("max", "resolved_at", at)
        add("last", "resolution", "merged")
    elif event_type == ev.TICKET_RESOLVED:
        add("max", "resolved_at", at)
        add("last", "resolved_by", e.agent_id)
        add("last", "resolution", e.resolution)
        add("last", "agent", e.agent_id)
    return u


def entry_of(source: str, event_type: str, event: ev.Envelope) -> Entry | None:
    """The record and fact updates of one consumed event; None when it names no ticket."""
    ticket_id = event.ticket_id
    if not ticket_id:
        return None
    record: dict[str, Any] = {"at": event.occurred_at.isoformat(), "type": event_type, "source": source,
                              "event_id": event.event_id, "trace_id": event.trace_id}
    for spec in _FIELDS.get(event_type, ()):
        name, value = (spec, getattr(event, spec, None)) if isinstance(spec, str) else (spec[0], spec[1](event))
        if value is not None:
            record[name] = value
    received = getattr(event, "received_at", None) if event_type in (
        ev.TICKET_RECEIVED, ev.TICKET_CLASSIFIED, ev.TICKET_QUEUED) else None
    return Entry(
        ticket_id=ticket_id, event_id=event.event_id, occurred_at=round(event.occurred_at.timestamp(), 3),
        record=json.dumps(record, ensure_ascii=False, separators=(",", ":"), sort_keys=True),
        updates=tuple(_updates(event_type, event)),
        received_at=round(received.timestamp(), 3) if received is not None else None,
        trace_id=event.trace_id if event_type == ev.TICKET_RECEIVED else None,
    )


# --- the path of one ticket ------------------------------------------------------------------

@dataclass
class Path:
    ticket_id: str
    trace_id: str | None
    events: list[dict[str, Any]] = field(default_factory=list)   # each with gap_seconds (None for the first)
    longest_gap: dict[str, Any] | None = None                    # {seconds, after, before}
    other_traces: list[str] = field(default_factory=list)        # trace ids that differ from the ticket's
    trimmed: int = 0                                              # oldest records dropped by the per-ticket cap

    def as_dict(self) -> dict[str, Any]:
        return {"ticket_id": self.ticket_id, "trace_id": self.trace_id, "events": self.events,
                "longest_gap": self.longest_gap, "other_traces": self.other_traces, "trimmed": self.trimmed}


def path(ticket_id: str, records: Iterable[str], *, trace_id: str | None = None, trimmed: int = 0) -> Path:
    """Stored records (JSON) → the ticket's path, oldest first, with the gap before each event."""
    events = sorted((json.loads(r) for r in records), key=lambda r: (r["at"], r["type"], r["event_id"]))
    trace = trace_id or next((r["trace_id"] for r in events if r["type"] == ev.TICKET_RECEIVED), None) \
        or (events[0]["trace_id"] if events else None)
    result = Path(ticket_id=ticket_id, trace_id=trace, trimmed=trimmed)
    previous: tuple[float, str] | None = None
    for record in events:
        at = datetime.fromisoformat(record["at"]).timestamp()
        gap = None if previous is None else round(at - previous[0], 3)
        result.events.append({**record, "gap_seconds": gap})
        if gap is not None and (result.longest_gap is None or gap > result.longest_gap["seconds"]):
            result.longest_gap = {"seconds": gap, "after": previous[1], "before": record["type"]}
        if record["trace_id"] != trace and record["trace_id"] not in result.other_traces:
            result.other_traces.append(record["trace_id"])
        previous = (at, record["type"])
    return result
