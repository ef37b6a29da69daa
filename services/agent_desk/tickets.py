"""The desk's view of a ticket and the rules for acting on it (pure: no aiohttp, no Redis).

The view is what an agent's console shows: built from ``ticket_received``, then amended by
the dispatcher's ``ticket_assigned``/``ticket_queued``, the customer's ``message_received``,
intake_email's ``mail_bounced`` (a system note: our mail to the customer did not arrive) and the
agents' own actions. Every change is a function ``view -> new view`` that gives the
same result when applied twice, because events are delivered at least once.

Status: ``new`` → ``queued`` (no agent free) → ``assigned`` → ``accepted`` → ``resolved``; a
customer message on a resolved ticket reopens it (back to ``accepted``/``assigned``, same agent).
"""
from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared import events as ev
from shared.logging import mask_email

Status = Literal["new", "queued", "assigned", "accepted", "resolved"]

MAX_REPLY_CHARS = 10_000
MAX_MESSAGES_KEPT = 500  # a view is one Redis value; the oldest messages give way first
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
    author: Literal["customer", "agent", "system"]
    agent_id: str | None = None
    text: str
    at: AwareDatetime


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)

    considered: int = 0
    eligible: int = 0
    reason: str = ""
    rejected: dict[str, str] = Field(default_factory=dict)


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
    priority: str | None = None
    required_skills: list[str] = Field(default_factory=list)
    decision: Decision | None = None
    queued_reason: str | None = None
    assigned_at: AwareDatetime | None = None
    accepted_at: AwareDatetime | None = None
    resolved_at: AwareDatetime | None = None
    reopened_by_message: str | None = None  # the customer message that last reopened it
    messages: list[Message] = Field(default_factory=list)

    def for_console(self) -> dict[str, Any]:
        """The JSON the console gets (the WebSocket ``ticket`` object and the API's body)."""
        # The chat visitor id is the visitor's credential for their transcript: agents never need it.
        return self.model_dump(mode="json", exclude={"trace_id": True, "customer": {"chat_visitor_id"}})


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
    return TicketView(
        ticket_id=event.ticket_id, trace_id=event.trace_id, channel=event.channel, subject=event.subject,
        text=event.text, customer=event.customer, received_at=event.received_at,
    )


def with_assignment(view: TicketView, event: ev.TicketAssigned) -> TicketView:
    if view.status == "resolved":
        return view
    if view.assigned_at and event.occurred_at < view.assigned_at:
        return view  # an older assignment redelivered after a newer one (a transfer)
    same_agent = view.agent_id == event.agent_id and view.status in ("assigned", "accepted")
    return view.model_copy(update={
        "status": view.status if same_agent else "assigned",
        "agent_id": event.agent_id,
        "priority": event.priority,
        "required_skills": list(event.required_skills),
        "decision": Decision(**event.decision.model_dump()),
        "queued_reason": None,
        "assigned_at": view.assigned_at if same_agent else event.occurred_at,
        "accepted_at": view.accepted_at if same_agent else None,
    })


def with_queued(view: TicketView, event: ev.TicketQueued) -> TicketView:
    if view.status != "new" and view.status != "queued":
        return view  # a late "queued" must not undo an assignment
    return view.model_copy(update={
        "status": "queued", "priority": event.priority, "required_skills": list(event.required_skills),
        "queued_reason": event.reason,
    })


def has_message(view: TicketView, message_id: str) -> bool:
    return any(m.message_id == message_id for m in view.messages)


def with_message(view: TicketView, message: Message) -> TicketView:
    if has_message(view, message.message_id):
        return view
    return view.model_copy(update={"messages": [*view.messages, message][-MAX_MESSAGES_KEPT:]})


def with_customer_message(view: TicketView, message: Message) -> TicketView:
    """Append a customer's message; one arriving on a resolved ticket reopens it for its last
    assignee (else the work list, which hides resolved tickets, would swallow it). A
    redelivered message is already there and changes nothing, even if resolved again since."""
    if has_message(view, message.message_id):
        return view
    appended = with_message(view, message)
    if view.status != "resolved" or not view.agent_id:
        return appended
    return appended.model_copy(update={
        "status": "accepted" if view.accepted_at else "assigned", "resolved_at": None,
        "reopened_by_message": message.message_id,
    })


def customer_message(event: ev.MessageReceived) -> Message:
    return Message(message_id=event.message_id, author="customer", text=event.text, at=event.received_at)


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
    """Accepting twice is fine (same view back); a queued or resolved ticket cannot be accepted."""
    _require_actor(view, agent_id, role)
    if view.status == "accepted":
        return view
    if view.status != "assigned":
        raise ActionRefused(409, f"ticket_{view.status}", f"the ticket is {view.status}, not assigned")
    return view.model_copy(update={"status": "accepted", "accepted_at": now})


def resolve(view: TicketView, agent_id: str, role: str, now: datetime) -> TicketView:
    _require_actor(view, agent_id, role)
    if view.status == "resolved":
        return view
    if view.status not in ("assigned", "accepted"):
        raise ActionRefused(409, f"ticket_{view.status}", f"the ticket is {view.status}, nobody works on it yet")
    return view.model_copy(update={"status": "resolved", "resolved_at": now})


def reply_text(view: TicketView, agent_id: str, role: str, text: Any) -> str:
    """The reply as it will be sent, or ActionRefused (403 before 400: don't leak validity)."""
    _require_actor(view, agent_id, role)
    if view.status == "resolved":
        raise ActionRefused(409, "ticket_resolved", "the ticket is resolved")
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
