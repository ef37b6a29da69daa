"""A ticket as its customer sees it, kept from the mesh's events (pure: no I/O, time passed in).

The projection holds only what a customer may see: number, subject, channel, a status in the
customer's words (received / assigned / waiting on you / resolved), the public messages (the
customer's own and the agents' replies: internal notes never travel as events, so they never
arrive here), the expected response time (from the SLA watcher's running clock), who resolved
it (the survey's ``agent_id``) and keyed hashes of the customer's email and phone (to check a
lookup; see ``customer_input``).

Events come from many queues, so they arrive in any order and some more than once. Every
fact is therefore a register that only a newer event (by ``occurred_at``) overwrites, and
messages are a set keyed by their ids: applying an event twice, or two events in either order,
ends in the same view. A ticket whose ``ticket_received`` has not arrived yet is kept with
``known=False`` (the page says it is being registered).

A contact the dispatcher folded into the customer's open ticket (``ticket_attached``) is a
customer message on that ticket, and its own view names the ticket it went to (its link leads
there).
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared import events as ev

from services.intake_chat import customer_texts

MAX_MESSAGES = 200                    # the page shows the latest; the oldest fall off
MESSAGE_SHOWN_MAX_CHARS = 10_000      # an email body can be 200,000 characters of quoted history
MAX_CONTACTS = 10
REPLY_AFTER_RESOLVED = timedelta(days=14)  # as for mail replies (TM_EMAIL_REOPEN_DAYS' default)
EXPECTING_CLOCKS = ("first_response", "next_response")
RUNNING_CHANGES = ("activated", "resumed", "recomputed", "breached")

CustomerStatus = Literal["received", "assigned", "waiting_on_you", "resolved"]
Author = Literal["customer", "agent", "call"]


class Message(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    author: Author
    text: str = ""
    agent_id: str | None = None
    at: AwareDatetime


class Clock(BaseModel):
    model_config = ConfigDict(frozen=True)

    change: str
    due_at: AwareDatetime | None = None
    at: AwareDatetime


class StatusView(BaseModel):
    model_config = ConfigDict(frozen=True)

    ticket_id: str
    known: bool = False
    trace_id: str | None = None
    channel: ev.Channel | None = None
    subject: str = ""
    customer_name: str = ""
    language: str | None = None
    contacts: tuple[str, ...] = ()
    received_at: AwareDatetime | None = None
    messages: tuple[Message, ...] = ()
    agent_id: str | None = None
    agent_at: AwareDatetime | None = None
    work_status: ev.TicketStatus = "open"
    work_status_at: AwareDatetime | None = None
    resolution: ev.Resolution | None = None
    resolved_by: str | None = None
    resolution_at: AwareDatetime | None = Field(default=None, description="when resolved or reopened last")
    customer_wrote_at: AwareDatetime | None = None
    attached_to: str | None = Field(default=None, description="the open ticket this contact was folded into")
    clocks: dict[str, Clock] = Field(default_factory=dict)
    updated_at: AwareDatetime | None = None


def _newer(at: datetime, than: datetime | None) -> bool:
    """Does a fact stamped ``at`` replace one stamped ``than``? Ties replace: the same event
    applied again writes the same value."""
    return than is None or at >= than


def _clip(text: str) -> str:
    return text if len(text) <= MESSAGE_SHOWN_MAX_CHARS else text[: MESSAGE_SHOWN_MAX_CHARS - 1] + "…"


def _with_message(view: StatusView, message: Message) -> StatusView:
    if any(m.id == message.id for m in view.messages):
        return view
    messages = sorted((*view.messages, message), key=lambda m: (m.at, m.id))[-MAX_MESSAGES:]
    return view.model_copy(update={"messages": tuple(messages)})


def _with_contacts(view: StatusView, hashes: list[str]) -> StatusView:
    if all(h in view.contacts for h in hashes):
        return view
    return view.model_copy(update={"contacts": tuple(sorted({*view.contacts, *hashes}))[:MAX_CONTACTS]})


def _customer_wrote(view: StatusView, at: datetime) -> StatusView:
    if view.customer_wrote_at is None or at > view.customer_wrote_at:
        return view.model_copy(update={"customer_wrote_at": at})
    return view


def new_view(ticket_id: str) -> StatusView:
    return StatusView(ticket_id=ticket_id)


def ignores(event: ev.Envelope) -> bool:
    """Events of a projected type that never show on the page (the resolution clock is not
    a promise to answer): not worth reading the view for."""
    return isinstance(event, ev.SlaClockChanged) and event.clock not in EXPECTING_CLOCKS


def apply(view: StatusView | None, event: ev.Envelope, *, contact_hashes: tuple[str, ...] | list[str] = ()) -> StatusView:
    """The view of ``event.ticket_id`` after ``event``; ``contact_hashes`` are the event's
    customer's (see customer_input)."""
    assert event.ticket_id, "customer views are per ticket"
    before = view or new_view(event.ticket_id)
    after = _with_contacts(_apply(before, event), list(contact_hashes))
    return _stamped(view, before, after, event)


def apply_attachment(view: StatusView | None, event: ev.TicketAttached, *,
                     contact_hashes: tuple[str, ...] | list[str] = ()) -> StatusView:
    """The view of the open ticket a new contact was folded into (``event.into_ticket_id``): the
    contact is one more customer message on it, and its address or number opens it too."""
    before = view or new_view(event.into_ticket_id)
    message = (Message(id=f"a:{event.ticket_id}", author="call", at=event.received_at) if event.channel == "phone" else
               Message(id=f"a:{event.ticket_id}", author="customer", text=_clip(event.text), at=event.received_at))
    after = _customer_wrote(_with_message(before, message), event.received_at)
    return _stamped(view, before, _with_contacts(after, list(contact_hashes)), event)


def _stamped(view: StatusView | None, before: StatusView, after: StatusView, event: ev.Envelope) -> StatusView:
    if after.trace_id is None:
        after = after.model_copy(update={"trace_id": event.trace_id})
    if after == before and view is not None:
        return view
    stamp = event.occurred_at if before.updated_at is None else max(before.updated_at, event.occurred_at)
    return after.model_copy(update={"updated_at": stamp})


def _apply(view: StatusView, event: ev.Envelope) -> StatusView:
    if isinstance(event, ev.TicketReceived):
        opening = (Message(id="opening", author="call", at=event.received_at) if event.channel == "phone" else
                   Message(id="opening", author="customer", text=_clip(event.text), at=event.received_at))
        view = view.model_copy(update={
            "known": True, "trace_id": event.trace_id, "channel": event.channel, "subject": event.subject[:300],
            "customer_name": event.customer.name, "language": event.customer.language or view.language,
            "received_at": event.received_at})
        return _with_message(view, opening)
    if isinstance(event, ev.MessageReceived):
        view = _with_message(view, Message(id=f"m:{event.message_id}", author="customer", text=_clip(event.text),
                                           at=event.received_at))
        return _customer_wrote(view, event.received_at)
    if isinstance(event, ev.AgentReplied):
        return _with_message(view, Message(id=f"r:{event.reply_id}", author="agent", text=_clip(event.text),
                                           agent_id=event.agent_id, at=event.occurred_at))
    if isinstance(event, (ev.TicketAssigned, ev.TicketAccepted)):
        if _newer(event.occurred_at, view.agent_at):
            return view.model_copy(update={"agent_id": event.agent_id, "agent_at": event.occurred_at})
        return view
    if isinstance(event, ev.TicketUnassigned):
        if view.agent_id == event.agent_id and _newer(event.occurred_at, view.agent_at):
            return view.model_copy(update={"agent_id": None, "agent_at": event.occurred_at})
        return view
    if isinstance(event, ev.TicketStatusChanged):
        if _newer(event.occurred_at, view.work_status_at):
            return view.model_copy(update={"work_status": event.status, "work_status_at": event.occurred_at})
        return view
    if isinstance(event, ev.TicketResolved):
        if _newer(event.occurred_at, view.resolution_at):
            return view.model_copy(update={"resolution": event.resolution, "resolved_by": event.agent_id,
                                           "resolution_at": event.occurred_at})
        return view
    if isinstance(event, ev.TicketReopened):
        if _newer(event.occurred_at, view.resolution_at):
            view = view.model_copy(update={"resolution": None, "resolution_at": event.occurred_at})
        if _newer(event.occurred_at, view.work_status_at):
            view = view.model_copy(update={"work_status": "open", "work_status_at": event.occurred_at})
        return view
    if isinstance(event, ev.TicketAttached):
        # This contact's own id: it was never routed, its conversation goes on in the open ticket.
        return view.model_copy(update={"attached_to": event.into_ticket_id})
    if isinstance(event, ev.SlaClockChanged):
        if ignores(event):
            return view
        current = view.clocks.get(event.clock)
        if current is not None and not _newer(event.occurred_at, current.at):
            return view
        clock = Clock(change=event.change, due_at=event.due_at, at=event.occurred_at)
        return view.model_copy(update={"clocks": {**view.clocks, event.clock: clock}})
    return view


# --- what the customer sees --------------------------------------------------------------------

def waiting_on_customer(view: StatusView) -> bool:
    """An agent asked the customer something, and the customer has not written since (a
    customer's message answers it, as agent_desk resumes the clocks on one)."""
    if view.work_status != "waiting_on_customer":
        return False
    return not (view.customer_wrote_at and view.work_status_at and view.customer_wrote_at > view.work_status_at)


def customer_status(view: StatusView) -> CustomerStatus:
    if view.resolution is not None:
        return "resolved"
    if waiting_on_customer(view):
        return "waiting_on_you"
    return "assigned" if view.agent_id else "received"


def expected_response_at(view: StatusView) -> datetime | None:
    """When we promised to answer: the earliest running first- or next-response clock. None
    while the ball is with the customer, once resolved, or when no clock runs."""
    if customer_status(view) in ("resolved", "waiting_on_you"):
        return None
    due = [c.due_at for c in view.clocks.values() if c.change in RUNNING_CHANGES and c.due_at is not None]
    return min(due) if due else None


def reply_refusal(view: StatusView, now: datetime) -> str | None:
    """Why the customer cannot add a reply now (a ``customer_texts`` key), or None if they can.

    A reply reopens a solved ticket (agent_desk does that for any customer message) for as long
    as a mail reply would; a ticket closed as spam or merged takes none (its conversation goes
    on elsewhere, or nowhere)."""
    if not view.known:
        return "reply_not_ready"
    if view.resolution in ("spam", "merged"):
        return "reply_closed"
    if view.resolution is not None and view.resolution_at and now - view.resolution_at > REPLY_AFTER_RESOLVED:
        return "reply_too_late"
    return None


def survey_refusal(view: StatusView | None) -> str | None:
    """Why there is no survey to answer for this ticket (a ``customer_texts`` key), or None.

    Only a ticket resolved as solved is surveyed: not spam, merged or auto-closed ones, and not
    one that is open again."""
    if view is None or not view.known or view.channel is None:
        return "survey_unknown"
    if view.resolution != "solved":
        return "survey_not_resolved" if view.resolution is None else "survey_not_wanted"
    return None


def public(view: StatusView, *, lang: str, agent_names: dict[str, str], now: datetime) -> dict[str, Any]:
    """The JSON the page renders (first paint and every live update), in the customer's language.

    Agents appear by display name only; an agent missing from the roster is "Support"."""
    text = customer_texts.TEXTS[lang]
    status = customer_status(view)
    messages = []
    for m in view.messages:
        if m.author == "agent":
            author = agent_names.get(m.agent_id or "", "") or text["agent"]
        elif m.author == "call":
            author = text["call_author"]
        else:
            author = text["you"]
        messages.append({"id": m.id, "from": m.author, "author": author,
                         "text": text["call_text"] if m.author == "call" else m.text, "at": m.at.isoformat()})
    due = expected_response_at(view)
    refusal = reply_refusal(view, now)
    status_key = "status_closed" if status == "resolved" and view.resolution != "solved" else f"status_{status}"
    return {
        "ticket_id": view.ticket_id,
        "known": view.known,
        "subject": view.subject,
        "channel": view.channel,
        "channel_label": text.get(f"channel_{view.channel}", "") if view.channel else "",
        "status": status,
        "status_label": text[status_key],
        "status_hint": text[f"{status_key}_hint"],
        "expected_response_at": due.isoformat() if due else None,
        "overdue": bool(due and due <= now),
        "messages": messages,
        "can_reply": refusal is None,
        "reply_refusal": text[refusal] if refusal else None,
        "updated_at": view.updated_at.isoformat() if view.updated_at else None,
    }
