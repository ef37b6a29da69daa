"""The desk's view of a ticket and the rules for acting on it (pure: no aiohttp, no Redis).

The view is what an agent's console shows: built from ``ticket_received``, then amended by
the dispatcher's ``ticket_assigned``/``ticket_queued``, the customer's ``message_received``,
intake_email's ``mail_bounced`` (a system note: our mail to the customer did not arrive) and the
agents' own actions. Every change is a function ``view -> new view`` that gives the
same result when applied twice, because events are delivered at least once.

Status: ``new`` → ``queued`` (no agent free) → ``assigned`` (offered) → ``accepted`` →
``resolved`` → ``reopened`` (by the agent, or by a customer message; the dispatcher routes it
again, preferring the last agent, who keeps it in their list meanwhile). ``ticket_unassigned``
(declined, offer expired, moved, escalated) takes it from its agent: ``queued`` until the next
``ticket_assigned``.

One customer across channels: the dispatcher's ``ticket_attached`` (mode attach) puts a contact
from another channel on the customer's open ticket as a customer message with its channel and a
system note "Continued from <channel>"; the contact's own view is marked ``attached_to`` and is
never a ticket of its own (its later messages go to that ticket too). Mode link notes the link on
both tickets, which stay apart. Classification also names the customer profile and its summary.

Classification fills tags, category, signals; every routing attempt's decision is kept (the
decision records); SLA warnings/breaches keep their due time per clock; transfers and
escalations add system notes; internal notes stay in the desk.
"""
from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared import events as ev
from shared.logging import mask_email, mask_phone

Status = Literal["new", "queued", "assigned", "accepted", "resolved", "reopened"]
WorkStatus = Literal["open", "waiting_on_customer", "on_hold"]  # shared/ticket_status.py: which pause SLA clocks
OPEN_STATUSES = ("assigned", "accepted", "reopened")

MAX_REPLY_CHARS = 10_000
MAX_MESSAGES_KEPT = 500  # a view is one Redis value; the oldest messages give way first
MAX_DECISIONS_KEPT = 50  # routing attempts kept per ticket (decision records)
MAX_NOTE_CHARS = 10_000
MAX_REASON_CHARS = 500
NOTE_MAX_CHARS = 1_000  # system notes
# Events on different queues arrive out of order for a moment; a view still missing after
# this long will not come (expired, or never ours), and waiting longer only spins the queue.
OUT_OF_ORDER_GRACE_SECONDS = 300
BOUNCE_REASON_MAX_CHARS = 200
_ADDRESS = re.compile(r"[^\s@<>()\[\],;:\"']+@[^\s@<>()\[\],;:\"']+")
_SMTP_CODE_PREFIX = re.compile(r"^[45]\d\d[\s-]+")
_ADDRESS_PREFIX = re.compile(r"^<[^<>\s]+>:?\s*")  # Postfix: "550 5.1.1 <a@b>: Recipient address rejected…"


class Message(BaseModel):
    model_config = ConfigDict(frozen=True)

    message_id: str
    # "note" is an internal note: it stays in the desk, no customer ever sees it.
    author: Literal["customer", "agent", "system", "note"]
    agent_id: str | None = None
    channel: ev.Channel | None = None   # the channel a customer message came by
    text: str
    at: AwareDatetime


class DecisionRecord(BaseModel):
    """One routing attempt as the dispatcher reported it (``ticket_assigned`` or ``ticket_queued``)."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    outcome: Literal["assigned", "queued"]
    agent_id: str | None = None
    attempt: int | None = None
    at: AwareDatetime
    decision: ev.RoutingDecision


class SlaClock(BaseModel):
    model_config = ConfigDict(frozen=True)

    state: Literal["warning", "breached"]
    due_at: AwareDatetime
    policy: str = ""


class TicketView(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    ticket_id: str
    trace_id: str
    channel: ev.Channel
    subject: str
    text: str
    customer: ev.Customer
    received_at: AwareDatetime
    status: Status = "new"
    agent_id: str | None = None
    last_agent_id: str | None = None   # who worked it last (reopen and history say so)
    priority: str | None = None
    required_skills: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    category: str | None = None
    signals: list[str] = Field(default_factory=list)
    language: str | None = None
    group: str | None = None
    customer_tier: str | None = None
    decision: ev.RoutingDecision | None = None
    decisions: list[DecisionRecord] = Field(default_factory=list)
    queued_reason: str | None = None
    queued_at: AwareDatetime | None = None
    assigned_at: AwareDatetime | None = None
    attempt: int | None = None
    offer_expires_at: AwareDatetime | None = None
    # The assignment that last ended (declined, expired, moved): a redelivery of it, or of an
    # older one, must not hand the ticket back.
    released_assignment_at: AwareDatetime | None = None
    declined_by: list[str] = Field(default_factory=list)
    accepted_at: AwareDatetime | None = None
    resolved_at: AwareDatetime | None = None
    reopened_by_message: str | None = None  # the customer message that last reopened it
    customer_id: str | None = None          # the customer profile (ticket_classified)
    customer_summary: ev.CustomerSummary | None = None
    attached_to: str | None = None          # this contact became a message on that ticket
    linked_tickets: list[str] = Field(default_factory=list)  # the same customer's tickets on other channels
    sla: dict[str, SlaClock] = Field(default_factory=dict)  # clock name -> latest warning/breach
    work_status: WorkStatus = "open"   # set by the agent (ticket_status_changed); a customer message reopens it
    status_changes: int = 0            # how many times it was set (the event id of the next one)
    messages: list[Message] = Field(default_factory=list)

    def for_console(self, *, full_contact: bool = True) -> dict[str, Any]:
        """The JSON the console gets (the WebSocket ``ticket`` object and the API's body).

        The customer's address and phone are masked unless ``full_contact`` (the assignee or a
        supervisor looking). Decision records are served on their own route.
        """
        # The chat visitor id is the visitor's credential for their transcript: agents never need it.
        data = self.model_dump(mode="json", exclude={"trace_id": True, "decisions": True,
                                                     "customer": {"chat_visitor_id"}})
        customer = data["customer"]
        customer["masked_email"] = mask_email(self.customer.email) if self.customer.email else None
        customer["masked_phone"] = mask_phone(self.customer.phone) if self.customer.phone else None
        if not full_contact:
            customer["email"] = customer["masked_email"]
            customer["phone"] = customer["masked_phone"]
        data["sla_due_at"] = _earliest_due(self)
        data["notes_count"] = sum(1 for m in self.messages if m.author == "note")
        return data

    def summary(self) -> dict[str, Any]:
        """A line in a list that is not the ticket itself (history, supervisor boards): no contact, no text."""
        return {"ticket_id": self.ticket_id, "channel": self.channel, "subject": self.subject[:200],
                "status": self.status, "agent_id": self.agent_id, "priority": self.priority,
                "received_at": self.received_at.isoformat(), "sla_due_at": _earliest_due(self),
                "sla_state": sla_state(self), "required_skills": self.required_skills}


def _earliest_due(view: "TicketView") -> str | None:
    dues = [c.due_at for c in view.sla.values()]
    return min(dues).isoformat() if dues else None


def sla_state(view: "TicketView") -> str | None:
    """"breached" if any clock breached, else "warning" if any warned, else None."""
    states = {c.state for c in view.sla.values()}
    return "breached" if "breached" in states else "warning" if "warning" in states else None


def customer_keys(customer: ev.Customer) -> list[str]:
    """What identifies a customer across tickets and channels: chat visitor, email, phone."""
    keys = []
    if customer.chat_visitor_id:
        keys.append(f"chat:{customer.chat_visitor_id}")
    if customer.email:
        keys.append(f"email:{customer.email.strip().lower()}")
    if customer.phone:
        keys.append(f"phone:{re.sub(r'[^0-9+]', '', customer.phone)}")
    return keys


def profile_key(customer_id: str) -> str:
    """The customer-history key of a profile (every channel of one customer)."""
    return f"profile:{customer_id}"


class ActionRefused(Exception):
    """An agent action that is not allowed; ``status`` and ``code`` become the HTTP error."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class TicketNotStored(Exception):
    """An event about a ticket whose view never arrived (and will not, it is too late)."""


# -- from events -----------------------------------------------------------------------------

def view_from_received(event: ev.TicketReceived) -> TicketView:
    view = TicketView(
        ticket_id=event.ticket_id, trace_id=event.trace_id, channel=event.channel, subject=event.subject,
        text=event.text, customer=event.customer, received_at=event.received_at,
        language=event.customer.language, customer_tier=event.customer.tier,
    )
    if ev.resolved_at_intake(event.source):
        # Resolved during the call (nobody routes it): on record, in the customer's history.
        view = view.model_copy(update={"status": "resolved", "resolved_at": event.received_at,
                                       "last_agent_id": event.source.get("agent_id") or None})
    return view


def _with_decision(view: TicketView, record: DecisionRecord) -> list[DecisionRecord]:
    if any(r.event_id == record.event_id for r in view.decisions):
        return list(view.decisions)
    return sorted([*view.decisions, record], key=lambda r: r.at)[-MAX_DECISIONS_KEPT:]


def decision_record(event: ev.TicketAssigned | ev.TicketQueued) -> DecisionRecord | None:
    if event.decision is None:
        return None
    if isinstance(event, ev.TicketAssigned):
        return DecisionRecord(event_id=event.event_id, outcome="assigned", agent_id=event.agent_id,
                              attempt=event.attempt, at=event.occurred_at, decision=event.decision)
    return DecisionRecord(event_id=event.event_id, outcome="queued", at=event.occurred_at, decision=event.decision)


def with_assignment(view: TicketView, event: ev.TicketAssigned) -> TicketView:
    record = decision_record(event)
    decisions = _with_decision(view, record) if record else list(view.decisions)
    if view.status == "resolved":
        return view.model_copy(update={"decisions": decisions})
    stale = (view.assigned_at and event.occurred_at < view.assigned_at) or \
        (view.released_assignment_at and event.occurred_at <= view.released_assignment_at)
    if stale:
        # An older assignment redelivered after a newer one (a transfer), or one that already ended.
        return view.model_copy(update={"decisions": decisions})
    same_agent = view.agent_id == event.agent_id and view.status in ("assigned", "accepted")
    return view.model_copy(update={
        "status": view.status if same_agent else "assigned",
        "agent_id": event.agent_id,
        "last_agent_id": event.agent_id,
        "priority": event.priority,
        "required_skills": list(event.required_skills),
        "group": event.group or view.group,
        "decision": event.decision,
        "decisions": decisions,
        "queued_reason": None,
        "queued_at": None,
        "assigned_at": view.assigned_at if same_agent else event.occurred_at,
        "attempt": event.attempt,
        "offer_expires_at": view.offer_expires_at if same_agent else event.offer_expires_at,
        "accepted_at": view.accepted_at if same_agent else None,
        "reopened_by_message": None if not same_agent else view.reopened_by_message,
    })


def with_queued(view: TicketView, event: ev.TicketQueued) -> TicketView:
    record = decision_record(event)
    decisions = _with_decision(view, record) if record else list(view.decisions)
    if view.status not in ("new", "queued", "reopened") or \
            (view.assigned_at and event.occurred_at < view.assigned_at):
        return view.model_copy(update={"decisions": decisions})  # a late "queued" must not undo an assignment
    return view.model_copy(update={
        "status": "queued", "agent_id": None, "priority": event.priority,
        "required_skills": list(event.required_skills), "group": event.group or view.group,
        "queued_reason": event.reason, "queued_at": view.queued_at or event.occurred_at,
        "decision": event.decision or view.decision, "decisions": decisions, "offer_expires_at": None,
    })


def with_classification(view: TicketView, event: ev.TicketClassified) -> TicketView:
    return view.model_copy(update={
        "tags": list(event.tags), "category": event.category, "signals": list(event.signals),
        "priority": view.priority or event.priority, "required_skills": view.required_skills or list(event.required_skills),
        "language": event.language or view.language, "group": view.group or event.group,
        "customer_tier": event.customer_tier,
        "customer_id": event.customer_id or view.customer_id,
        "customer_summary": event.history or view.customer_summary,
    })


def with_unassigned(view: TicketView, event: ev.TicketUnassigned) -> TicketView:
    """The dispatcher took the ticket from ``event.agent_id``; a newer assignment is left alone."""
    if view.agent_id != event.agent_id or view.status == "resolved":
        return view
    if view.assigned_at and event.occurred_at < view.assigned_at:
        return view  # this unassignment is about an earlier hold of the same agent
    return _released(view, f"unassigned: {event.reason}", event.occurred_at)


def _released(view: TicketView, reason: str, now: datetime) -> TicketView:
    return view.model_copy(update={
        "status": "queued", "agent_id": None, "queued_reason": reason, "queued_at": now,
        "offer_expires_at": None, "accepted_at": None, "released_assignment_at": view.assigned_at,
    })


def with_sla(view: TicketView, event: ev.SlaEvent) -> TicketView:
    state = "breached" if isinstance(event, ev.SlaBreached) else "warning"
    current = view.sla.get(event.clock)
    if current is not None and current.state == "breached" and state == "warning" and current.due_at == event.due_at:
        return view  # a late warning does not undo a breach
    clock = SlaClock(state=state, due_at=event.due_at, policy=event.policy)
    if current == clock:
        return view
    return view.model_copy(update={"sla": {**view.sla, event.clock: clock}})


def transfer_note(event: ev.TicketTransferred) -> Message:
    target = event.to_agent_id or (f"group {event.to_group}" if event.to_group else "the queue")
    what = "Reassigned" if event.kind == "reassign" else "Transferred"
    source = f" from {event.from_agent_id}" if event.from_agent_id else ""
    detail = f" – {event.detail}" if event.detail else ""
    text = f"{what}{source} to {target} by {event.requested_by} ({event.outcome}{detail}): {event.reason}"
    return Message(message_id=f"transferred:{event.event_id}", author="system", text=text[:NOTE_MAX_CHARS],
                   at=event.occurred_at)


_ESCALATION_ACTIONS = {"notify_assignee": "assignee reminded", "notify_supervisor": "supervisor notified",
                       "notify_duty_manager": "duty manager notified"}


def escalation_note(event: ev.TicketEscalated) -> Message:
    if event.action == "reassign_next_tier":
        what = f"Escalated to {event.to_tier or 'next tier'}"
    elif event.action == "raise_priority":
        what = f"Priority raised to {event.to_priority}"
    else:
        what = "Escalation: " + _ESCALATION_ACTIONS.get(event.action, event.action)
    text = f"{what} (level {event.level}, {event.clock} clock, {event.trigger}): {event.reason}"
    return Message(message_id=f"escalated:{event.event_id}", author="system", text=text[:NOTE_MAX_CHARS],
                   at=event.occurred_at)


def with_escalation(view: TicketView, event: ev.TicketEscalated) -> TicketView:
    """The note, and a raised priority shown at once (never lowered)."""
    view = with_message(view, escalation_note(event))
    if event.action == "raise_priority" and event.to_priority and (view.priority or "P4") > event.to_priority:
        view = view.model_copy(update={"priority": event.to_priority})
    return view


def has_message(view: TicketView, message_id: str) -> bool:
    return any(m.message_id == message_id for m in view.messages)


def with_message(view: TicketView, message: Message) -> TicketView:
    if has_message(view, message.message_id):
        return view
    return view.model_copy(update={"messages": [*view.messages, message][-MAX_MESSAGES_KEPT:]})


def with_customer_message(view: TicketView, message: Message) -> TicketView:
    """Append a customer's message; one arriving on a resolved ticket reopens it (``reopened``,
    still with its last agent: the desk announces ``ticket_reopened`` and the dispatcher routes
    it). A redelivered message is already there and changes nothing, even if resolved again since."""
    if has_message(view, message.message_id):
        return view
    appended = with_message(view, message)
    if view.work_status != "open":  # the customer answered: no longer waiting on them
        appended = appended.model_copy(update={"work_status": "open"})
    if view.status != "resolved":
        return appended
    return appended.model_copy(update={"status": "reopened", "resolved_at": None,
                                       "reopened_by_message": message.message_id})


def customer_message(event: ev.MessageReceived) -> Message:
    return Message(message_id=event.message_id, author="customer", channel=event.channel, text=event.text,
                   at=event.received_at)


def attached_message_id(event: ev.TicketAttached) -> str:
    return f"attached:{event.ticket_id}"


def with_attached(view: TicketView, event: ev.TicketAttached) -> TicketView:
    """The open ticket ``event.into_ticket_id`` carries the contact: mode attach, a system note
    "Continued from <channel>" and the contact as a customer message with its channel (on a
    ticket resolved meanwhile, it reopens it like any customer message); mode link, a note."""
    if event.mode == "link":
        note = Message(message_id=f"linked:{event.ticket_id}", author="system", at=event.received_at,
                       text=f"The customer also contacted us by {event.channel}: {event.ticket_id}"[:NOTE_MAX_CHARS])
        linked = view.linked_tickets if event.ticket_id in view.linked_tickets else [*view.linked_tickets, event.ticket_id]
        return with_message(view, note).model_copy(update={"linked_tickets": linked[-20:]})
    note = Message(message_id=f"continued:{event.ticket_id}", author="system", at=event.received_at,
                   text=f"Continued from {event.channel} ({event.ticket_id})")
    text = event.text
    if event.channel == "email" and event.subject and not text.startswith(event.subject):
        text = f"{event.subject}\n\n{text}"  # a mail's subject says what it is about
    message = Message(message_id=attached_message_id(event), author="customer", channel=event.channel, text=text,
                      at=event.received_at)
    if has_message(view, message.message_id):
        return view
    return with_customer_message(with_message(view, note), message)


def as_attached(view: TicketView, event: ev.TicketAttached) -> TicketView:
    """The contact's own view: attached (never a ticket of its own), or linked."""
    if event.mode == "link":
        if event.into_ticket_id in view.linked_tickets:
            return view
        note = Message(message_id=f"linked:{event.into_ticket_id}", author="system", at=event.received_at,
                       text=f"Linked to the customer's open ticket {event.into_ticket_id}"[:NOTE_MAX_CHARS])
        return with_message(view, note).model_copy(update={"linked_tickets": [*view.linked_tickets,
                                                                              event.into_ticket_id][-20:]})
    return view if view.attached_to == event.into_ticket_id else view.model_copy(
        update={"attached_to": event.into_ticket_id})


def bounce_note(event: ev.MailBounced) -> Message:
    """"Delivery to c***@example.com failed: 5.1.1 user unknown (permanent)" — addresses masked
    (the server's answer usually repeats the address), one line, short."""
    recipients = ", ".join(mask_email(r) for r in event.recipients)
    reason = _SMTP_CODE_PREFIX.sub("", " ".join(event.reason.split()))
    if event.status and reason.startswith(event.status):
        reason = reason[len(event.status):].strip()
    reason = _ADDRESS_PREFIX.sub("", reason)
    reason = _ADDRESS.sub(lambda found: mask_email(found.group(0).strip("<>")), reason)[:BOUNCE_REASON_MAX_CHARS]
    why = " ".join(part for part in (event.status, reason) if part) or "no reason given"
    lasting = "permanent" if event.hard else "temporary"
    return Message(message_id=f"bounce:{event.event_id}", author="system",
                   text=f"Delivery to {recipients} failed: {why} ({lasting})", at=event.received_at)


def retry_or_give_up(event: ev.Envelope, now: datetime) -> bool:
    """True while a missing view may still arrive (so the event is worth retrying)."""
    return (now - event.occurred_at).total_seconds() < OUT_OF_ORDER_GRACE_SECONDS


# -- agent actions ---------------------------------------------------------------------------

def may_act(view: TicketView, agent_id: str, role: str) -> bool:
    return role == "supervisor" or view.agent_id == agent_id


def _require_actor(view: TicketView, agent_id: str, role: str) -> None:
    if not may_act(view, agent_id, role):
        raise ActionRefused(403, "not_assignee", "only the assigned agent or a supervisor may do this")


def accept(view: TicketView, agent_id: str, role: str, now: datetime) -> TicketView:
    """Accepting twice is fine (same view back); a queued or resolved ticket, or an offer that
    has run out, cannot be accepted."""
    _require_actor(view, agent_id, role)
    if view.status == "accepted":
        return view
    if view.status != "assigned":
        raise ActionRefused(409, f"ticket_{view.status}", f"the ticket is {view.status}, not assigned")
    if view.offer_expires_at and now > view.offer_expires_at:
        raise ActionRefused(409, "offer_expired", "the offer has run out")
    return view.model_copy(update={"status": "accepted", "accepted_at": now, "offer_expires_at": None})


def already_declined(view: TicketView, agent_id: str) -> bool:
    """A retried decline: the agent declined and the ticket is no longer theirs."""
    return agent_id in view.declined_by and view.agent_id != agent_id


def decline(view: TicketView, agent_id: str, reason: Any, now: datetime) -> tuple[TicketView, str]:
    """The offer goes back (only the offered agent can decline, and only before accepting)."""
    if view.agent_id != agent_id:
        raise ActionRefused(403, "not_assignee", "only the agent the ticket is offered to may decline it")
    if view.status != "assigned":
        raise ActionRefused(409, f"ticket_{view.status}", f"the ticket is {view.status}, there is no offer to decline")
    reason = _short_text(reason, "reason", required=False)
    released = _released(view, "declined", now)
    return released.model_copy(update={"declined_by": [*view.declined_by, agent_id][-20:]}), reason


def resolve(view: TicketView, agent_id: str, role: str, now: datetime) -> TicketView:
    _require_actor(view, agent_id, role)
    if view.status == "resolved":
        return view
    if view.status not in OPEN_STATUSES:
        raise ActionRefused(409, f"ticket_{view.status}", f"the ticket is {view.status}, nobody works on it yet")
    return view.model_copy(update={"status": "resolved", "resolved_at": now, "offer_expires_at": None})


def may_reopen(view: TicketView, agent_id: str, role: str) -> None:
    if not (role == "supervisor" or view.agent_id == agent_id or view.last_agent_id == agent_id):
        raise ActionRefused(403, "not_assignee", "only the last agent or a supervisor may reopen this ticket")


def reopen(view: TicketView, agent_id: str, role: str) -> TicketView:
    """A resolved ticket is open again, with its last agent until the dispatcher routes it."""
    may_reopen(view, agent_id, role)
    if view.status == "reopened":
        return view
    if view.status != "resolved":
        raise ActionRefused(409, f"ticket_{view.status}", f"the ticket is {view.status}, not resolved")
    return view.model_copy(update={"status": "reopened", "resolved_at": None, "reopened_by_message": None})


def set_work_status(view: TicketView, agent_id: str, role: str, status: Any) -> TicketView:
    """The assignee (or a supervisor) sets an open ticket's working status; the same one again
    changes nothing."""
    _require_actor(view, agent_id, role)
    if status not in ("open", "waiting_on_customer", "on_hold"):
        raise ActionRefused(400, "invalid_status", "status is one of open, waiting_on_customer, on_hold")
    if view.work_status == status:
        return view
    if view.status not in OPEN_STATUSES:
        raise ActionRefused(409, f"ticket_{view.status}", f"the ticket is {view.status}, its status cannot be set")
    return view.model_copy(update={"work_status": status, "status_changes": view.status_changes + 1})


def note_text(view: TicketView, agent_id: str, role: str, text: Any) -> str:
    _require_actor(view, agent_id, role)
    return _short_text(text, "text", limit=MAX_NOTE_CHARS)


def internal_note(note_id: str, agent_id: str, text: str, now: datetime) -> Message:
    return Message(message_id=f"note:{note_id}", author="note", agent_id=agent_id, text=text, at=now)


def transfer_target(data: dict, *, agents: set[str], groups: set[str]) -> tuple[str | None, str | None, str]:
    """(to_agent_id, to_group, reason) from a transfer/reassign request body; exactly one target."""
    to_agent, to_group = data.get("to_agent_id"), data.get("to_group")
    if (to_agent is None) == (to_group is None):
        raise ActionRefused(400, "invalid_target", "give exactly one of to_agent_id and to_group")
    if to_agent is not None and (not isinstance(to_agent, str) or to_agent not in agents):
        raise ActionRefused(400, "unknown_agent", "to_agent_id is not an agent in the roster")
    if to_group is not None and (not isinstance(to_group, str) or to_group not in groups):
        raise ActionRefused(400, "unknown_group", "to_group is not a group in the roster")
    return to_agent, to_group, _short_text(data.get("reason"), "reason")


def may_transfer(view: TicketView, agent_id: str, role: str, to_agent: str | None) -> None:
    _require_actor(view, agent_id, role)
    if view.status not in OPEN_STATUSES:
        raise ActionRefused(409, f"ticket_{view.status}", f"the ticket is {view.status}, it cannot be transferred")
    if to_agent is not None and to_agent == view.agent_id:
        raise ActionRefused(400, "same_agent", "the ticket is already with that agent")


def may_reassign(view: TicketView, role: str, to_agent: str | None) -> None:
    if role != "supervisor":
        raise ActionRefused(403, "not_supervisor", "only supervisors reassign tickets")
    if view.status == "resolved":
        raise ActionRefused(409, "ticket_resolved", "the ticket is resolved; reopen it first")
    if to_agent is not None and to_agent == view.agent_id:
        raise ActionRefused(400, "same_agent", "the ticket is already with that agent")


def request_note(kind: str, event_id: str, by: str, to_agent: str | None, to_group: str | None, reason: str,
                 now: datetime) -> Message:
    target = to_agent or f"group {to_group}"
    what = "Reassignment" if kind == "reassign" else "Transfer"
    return Message(message_id=f"{kind}-requested:{event_id}", author="system",
                   text=f"{what} to {target} requested by {by}: {reason}"[:NOTE_MAX_CHARS], at=now)


def _short_text(value: Any, name: str, *, required: bool = True, limit: int = MAX_REASON_CHARS) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ActionRefused(400, f"invalid_{name}", f"{name} must be a string")
    value = value.strip()
    if len(value) > limit or (required and not value):
        raise ActionRefused(400, f"invalid_{name}", f"{name} has {1 if required else 0} to {limit} characters")
    return value


def reply_text(view: TicketView, agent_id: str, role: str, text: Any) -> str:
    """The reply as it will be sent, or ActionRefused (403 before 400: don't leak validity)."""
    _require_actor(view, agent_id, role)
    if view.status == "resolved":
        raise ActionRefused(409, "ticket_resolved", "the ticket is resolved; reopen it first")
    if not isinstance(text, str):
        raise ActionRefused(400, "invalid_text", "text must be a string")
    text = text.strip()
    if not 1 <= len(text) <= MAX_REPLY_CHARS:
        raise ActionRefused(400, "invalid_text", f"a reply has 1 to {MAX_REPLY_CHARS} characters")
    return text


def agent_message_id(reply_id: str) -> str:
    return f"reply:{reply_id}"


def agent_message(reply_id: str, agent_id: str, text: str, now: datetime) -> Message:
    return Message(message_id=agent_message_id(reply_id), author="agent", agent_id=agent_id, text=text, at=now)
