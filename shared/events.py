"""The message contract: exchanges, event types, the envelope and every payload schema.

Topology (nameko's convention, followed verbatim by the asyncio services)::

    intake_email.events ─┐                          ┌─ dispatcher.events ──┐
    intake_chat.events  ─┼─ ticket_received ──────▶ dispatcher            ├─▶ agent_desk, sla_watcher,
    intake_phone.events ─┘  message_received        │ ticket_classified    │   notifier
                                                    │ ticket_assigned      │
    agent_desk.events ── agent_presence_changed ──▶ │ ticket_queued        ┘
                         ticket_accepted, agent_replied, ticket_resolved
    sla_watcher.events ─ sla_warning, sla_breached ─▶ notifier, agent_desk

Each producing service publishes to one durable topic exchange ``<service>.events`` with the
event type as routing key and a JSON body. Every body carries the envelope fields
(``event_id``, ``occurred_at``, ``schema_version``, ``trace_id``, ``ticket_id``).

Producers build bodies with :func:`make_event` (which validates and rejects unknown fields);
consumers read them with :func:`parse_event` (which validates and raises :class:`InvalidEvent`
with a reason that goes to the dead-letter queue). Consumers are tolerant readers: fields they
do not know are ignored, so a producer may add optional fields without a coordinated release.
"""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any, Literal, Mapping

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

SCHEMA_VERSION = 1

Channel = Literal["email", "chat", "phone"]
Presence = Literal["online", "away", "offline"]
Priority = Literal["P1", "P2", "P3", "P4"]

# Services that produce events (their exchanges are "<name>.events").
INTAKE_EMAIL = "intake_email"
INTAKE_CHAT = "intake_chat"
INTAKE_PHONE = "intake_phone"
DISPATCHER = "dispatcher"
SLA_WATCHER = "sla_watcher"
NOTIFIER = "notifier"
AGENT_DESK = "agent_desk"
INTAKE_SERVICES = (INTAKE_EMAIL, INTAKE_CHAT, INTAKE_PHONE)

# Event types: past-tense facts.
TICKET_RECEIVED = "ticket_received"
MESSAGE_RECEIVED = "message_received"
TICKET_CLASSIFIED = "ticket_classified"
TICKET_ASSIGNED = "ticket_assigned"
TICKET_QUEUED = "ticket_queued"
AGENT_PRESENCE_CHANGED = "agent_presence_changed"
TICKET_ACCEPTED = "ticket_accepted"
AGENT_REPLIED = "agent_replied"
TICKET_RESOLVED = "ticket_resolved"
SLA_WARNING = "sla_warning"
SLA_BREACHED = "sla_breached"
NOTIFICATION_SENT = "notification_sent"
MAIL_BOUNCED = "mail_bounced"
MAIL_REJECTED = "mail_rejected"
# Issue 5: offers, declines, transfers, reopen, escalation.
TICKET_DECLINED = "ticket_declined"                      # agent_desk: an agent declined an offer
TICKET_UNASSIGNED = "ticket_unassigned"                  # dispatcher: an offer/assignment ended without resolution
TICKET_TRANSFER_REQUESTED = "ticket_transfer_requested"  # agent_desk: transfer or supervisor reassignment asked for
TICKET_TRANSFERRED = "ticket_transferred"                # dispatcher: a transfer/reassignment was carried out
TICKET_REOPENED = "ticket_reopened"                      # agent_desk: a resolved ticket is open again
TICKET_ESCALATED = "ticket_escalated"                    # sla_watcher: one step of a policy's escalation ladder
# Issue 6: statuses that pause clocks, clock changes, customer satisfaction, failed notifications.
TICKET_STATUS_CHANGED = "ticket_status_changed"          # agent_desk: open / waiting_on_customer / on_hold
SLA_CLOCK_CHANGED = "sla_clock_changed"                  # sla_watcher: a clock activated, paused, resumed, ...
CSAT_SUBMITTED = "csat_submitted"                        # intake_chat: a customer answered the survey
NOTIFICATION_FAILED = "notification_failed"              # notifier: a notification gave up (5xx or attempts spent)
# Issue 4: one customer across channels.
TICKET_ATTACHED = "ticket_attached"                      # dispatcher: a contact joined the customer's open ticket
# Issue 4: web chat.
CHAT_TRANSCRIPT_REQUESTED = "chat_transcript_requested"  # intake_chat: the customer asked for the transcript by email
CHAT_REPLY_MISSED = "chat_reply_missed"                  # intake_chat: agent replies the customer's widget never received
CHAT_TYPING = "chat_typing"                              # intake_chat: the customer is typing (throttled, ephemeral)
AGENT_TYPING = "agent_typing"                            # agent_desk: an agent is typing a chat reply (ephemeral)


def exchange_name(service: str) -> str:
    return f"{service}.events"


class InvalidEvent(ValueError):
    """A body that does not match its schema; ``reason`` says why in one line."""

    def __init__(self, source: str, event_type: str, reason: str):
        super().__init__(f"{source}.{event_type}: {reason}")
        self.source = source
        self.event_type = event_type
        self.reason = reason


class Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, str_max_length=1_000_000)

    event_id: str = Field(min_length=1, max_length=64)
    occurred_at: AwareDatetime
    schema_version: int = Field(ge=1)
    trace_id: str = Field(min_length=1, max_length=64)
    ticket_id: str | None = Field(default=None, max_length=64)


IdentifierKind = Literal["email", "phone", "chat_visitor", "external_user"]


class Customer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str = Field(default="", max_length=200)
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=32, description="E.164")
    chat_visitor_id: str | None = Field(default=None, max_length=128)
    language: str | None = Field(default=None, max_length=16)
    tier: str | None = Field(default=None, max_length=32, description="e.g. vip; None = standard")
    external_user_id: str | None = Field(default=None, max_length=128, description="the company's own user id "
                                         "(chat visitors verified by HMAC)")
    verified: list[IdentifierKind] = Field(default_factory=list, description="which of the identifiers above the "
                                           "channel proved (mail sender, caller id, HMAC); the others were typed in "
                                           "and only ever link a profile as 'maybe'")


class TicketEvent(Envelope):
    ticket_id: str = Field(min_length=1, max_length=64)


class Attachment(BaseModel):
    """A file that came with a message, stored content-addressed (``sha256``) by its intake.

    ``stored`` is False when a size limit kept the content out (it is still listed, so an
    agent knows it existed); ``content_id`` is set for inline images (``cid:`` in the HTML).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    filename: str = Field(default="", max_length=255)
    content_type: str = Field(default="application/octet-stream", max_length=255)
    size: int = Field(ge=0)
    sha256: str = Field(default="", max_length=64)
    content_id: str | None = Field(default=None, max_length=255)
    stored: bool = True


class TicketReceived(TicketEvent):
    """A new ticket was opened from a channel. ``source`` holds the channel's natural keys.

    ``text`` is what the customer wrote (for email, the whole body as text; the raw message
    stays retrievable through ``source["raw_sha256"]``).
    ``linked_ticket_id`` names an earlier ticket this one follows up (e.g. mail answering a
    ticket closed too long ago to reopen).
    """

    channel: Channel
    customer: Customer
    subject: str = Field(max_length=1000)
    text: str = Field(max_length=200_000)
    received_at: AwareDatetime
    source: dict[str, str] = Field(default_factory=dict)
    attachments: list[Attachment] = Field(default_factory=list, max_length=200)
    linked_ticket_id: str | None = Field(default=None, max_length=64)


class MessageReceived(TicketEvent):
    """A customer added a message to an existing ticket.

    For email, ``text`` is the new part only: the quoted history is already on the ticket
    (the whole message stays retrievable through ``source["raw_sha256"]``).
    """

    channel: Channel
    customer: Customer
    text: str = Field(max_length=200_000)
    message_id: str = Field(min_length=1, max_length=128)
    received_at: AwareDatetime
    source: dict[str, str] = Field(default_factory=dict)
    attachments: list[Attachment] = Field(default_factory=list, max_length=200)


class CustomerSummary(BaseModel):
    """What routing and agents should know about the customer, travelling with the ticket."""
    model_config = ConfigDict(extra="ignore", frozen=True)

    open_tickets: list[str] = Field(default_factory=list, max_length=50)
    recent_tickets: int = 0
    recent_complaints: int = 0
    last_agent_id: str | None = None


class TicketAttached(TicketEvent):
    """A contact that became a message on the customer's open ticket instead of a second ticket
    (same customer, another channel, within the configured window). ``ticket_id`` is the new
    contact's id (never routed), ``into_ticket_id`` the open ticket that now carries it."""
    into_ticket_id: str = Field(min_length=1, max_length=64)
    channel: Channel
    customer: Customer
    customer_id: str | None = None
    subject: str = Field(default="", max_length=1000)
    text: str = Field(max_length=200_000)
    received_at: AwareDatetime
    attachments: list[Attachment] = Field(default_factory=list, max_length=200)
    mode: Literal["attach", "link"] = "attach"


Tier = Literal["L1", "L2", "duty_manager"]
TIERS: tuple[str, ...] = ("L1", "L2", "duty_manager")  # lowest first; escalation moves one step right
UnassignReason = Literal["declined", "offer_expired", "agent_offline", "agent_away", "transferred",
                         "reassigned", "escalated", "roster_removed"]


class TicketClassified(TicketEvent):
    channel: Channel
    priority: Priority
    required_skills: list[str]
    language: str
    tags: list[str] = Field(default_factory=list)
    received_at: AwareDatetime
    customer_tier: str = "standard"
    preferred_skills: list[str] = Field(default_factory=list)
    category: str | None = Field(default=None, max_length=100)
    group: str | None = Field(default=None, max_length=100)
    signals: list[str] = Field(default_factory=list, description="built-in signals, e.g. complaint_risk, repeat_contact")
    matched_rules: list[str] = Field(default_factory=list)
    customer_id: str | None = Field(default=None, max_length=64, description="the customer profile (issue 4)")
    history: CustomerSummary | None = None


class CandidateScore(BaseModel):
    """One eligible agent as the router scored it (the decision record's candidate list)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    agent_id: str
    score: float
    spare_share: float = Field(description="free share of the agent's capacity, 0..1")
    proficiency: float = Field(default=0.0, description="required-skill proficiency, normalised 0..1")
    preferred: float = Field(default=0.0, description="share of the preferred skills the agent has, 0..1")
    idle_seconds: float | None = Field(default=None, description="since last assignment; None = never")


class RoutingDecision(BaseModel):
    """Why a routing attempt ended as it did. Every field but the first three is optional so
    older records still parse."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    considered: int
    eligible: int
    reason: str
    rejected: dict[str, str] = Field(default_factory=dict, description="agent_id -> 'kind: detail' (kind: presence, "
                                     "skill, language, capacity, fairness, tier, group, declined)")
    rejected_counts: dict[str, int] = Field(default_factory=dict, description="kind -> agents filtered, incl. unlisted")
    candidates: list[CandidateScore] = Field(default_factory=list, description="best first, at most ~10")
    winner: str | None = None
    step: str = Field(default="initial", description="initial | drop_preferred | widen_group | next_tier | sticky | "
                      "transfer | reassign | escalation | requeue")
    policy: str = "default"
    decided_at: AwareDatetime | None = None


class TicketAssigned(TicketEvent):
    """The ticket is offered to (and holds capacity of) ``agent_id``. With offers on,
    ``offer_expires_at`` says when an unaccepted offer goes back to the queue; None = no
    acceptance needed (offers off, or a transfer/reassignment the agent cannot decline)."""

    agent_id: str = Field(min_length=1)
    channel: Channel
    priority: Priority
    required_skills: list[str]
    decision: RoutingDecision
    attempt: int = Field(default=1, ge=1, description="1 for the first assignment, +1 for each later one")
    offer_expires_at: AwareDatetime | None = None
    preferred_skills: list[str] = Field(default_factory=list)
    group: str | None = None
    tier: Tier = "L1"


class TicketQueued(TicketEvent):
    channel: Channel
    priority: Priority
    required_skills: list[str]
    reason: str
    decision: RoutingDecision | None = None
    preferred_skills: list[str] = Field(default_factory=list)
    group: str | None = None
    tier: Tier = "L1"
    received_at: AwareDatetime | None = None


class TicketUnassigned(TicketEvent):
    """``agent_id`` no longer holds the ticket (their capacity is freed); a ``ticket_assigned``
    or ``ticket_queued`` follows."""

    agent_id: str = Field(min_length=1)
    reason: UnassignReason
    by: str | None = Field(default=None, description="who caused it (agent/supervisor id), None = the system")
    note: str = Field(default="", max_length=500)


class TicketDeclined(TicketEvent):
    agent_id: str = Field(min_length=1)
    reason: str = Field(default="", max_length=500)
    attempt: int | None = Field(default=None, ge=1, description="the ticket_assigned.attempt declined: a decline "
                                "of an earlier offer, or of one already accepted, changes nothing")


class TicketTransferRequested(TicketEvent):
    """An agent hands a ticket on, or a supervisor assigns it; exactly one target is set."""

    requested_by: str = Field(min_length=1, description="agent id of who asked")
    kind: Literal["transfer", "reassign"]
    to_agent_id: str | None = None
    to_group: str | None = Field(default=None, max_length=100)
    reason: str = Field(min_length=1, max_length=500)


class TicketTransferred(TicketEvent):
    requested_by: str
    kind: Literal["transfer", "reassign"]
    from_agent_id: str | None = None
    to_agent_id: str | None = None
    to_group: str | None = None
    reason: str
    outcome: Literal["assigned", "queued", "rejected"]
    detail: str = ""


class TicketReopened(TicketEvent):
    """A resolved ticket is open again: by an agent, or by a customer's message."""

    by: Literal["agent", "customer"]
    agent_id: str | None = Field(default=None, description="who reopened (by=agent) / last assignee (by=customer)")
    channel: Channel


EscalationAction = Literal["notify_assignee", "notify_supervisor", "raise_priority", "reassign_next_tier",
                           "notify_duty_manager"]
EscalationTrigger = Literal["breach", "warning", "second_contact", "reopen"]


class TicketEscalated(TicketEvent):
    """One rung of a policy's escalation ladder. The dispatcher acts on ``reassign_next_tier``
    (route to ``to_tier`` or the next tier) and ``raise_priority`` (to ``to_priority``); the
    notifier on the ``notify_*`` actions; agent_desk shows every one on the ticket."""
    clock: str
    policy: str
    level: int = Field(ge=1)
    to_tier: Tier | None = Field(default=None, description="None = the next tier after the current one")
    reason: str = Field(max_length=500)
    action: EscalationAction = "reassign_next_tier"
    trigger: EscalationTrigger = "breach"
    to_priority: Priority | None = Field(default=None, description="raise_priority: the new priority")
    agent_id: str | None = Field(default=None, description="the assignee when it fired, if any")


class AgentPresenceChanged(Envelope):
    agent_id: str = Field(min_length=1)
    presence: Presence


class TicketAccepted(TicketEvent):
    agent_id: str = Field(min_length=1)
    attempt: int | None = Field(default=None, ge=1, description="the ticket_assigned.attempt accepted; "
                                "None = whatever the agent holds (older producers)")


class AgentReplied(TicketEvent):
    agent_id: str = Field(min_length=1)
    channel: Channel
    text: str = Field(min_length=1, max_length=100_000)
    reply_id: str = Field(min_length=1, max_length=64)
    customer: Customer


def resolved_at_intake(source: Mapping[str, str]) -> bool:
    """A ``ticket_received`` its intake reports already resolved: a call the agent resolved
    while the customer was on the line (intake_phone sets ``source["resolved_on_first_contact"]
    = "true"``, and ``source["agent_id"]`` when the wrap-up named the agent). The dispatcher
    does not route it; the desk stores it resolved."""
    return str(source.get("resolved_on_first_contact", "")).lower() == "true"


Resolution = Literal["solved", "spam", "merged", "auto_closed"]


class TicketResolved(TicketEvent):
    agent_id: str = Field(min_length=1)
    channel: Channel
    resolution: Resolution = Field(default="solved", description="no CSAT survey goes out for spam, merged or "
                                   "auto_closed tickets")


SlaClockName = Literal["first_response", "next_response", "resolution"]
SlaClockChange = Literal["activated", "paused", "resumed", "fulfilled", "stopped", "breached", "recomputed"]
TicketStatus = Literal["open", "waiting_on_customer", "on_hold"]


class TicketStatusChanged(TicketEvent):
    """An agent set a ticket's working status (resolving is ``ticket_resolved``). ``paused`` is
    the status's pause flag from the status table: it pauses next-response and resolution
    clocks; a customer message (``message_received``) or a status without it resumes them."""
    status: TicketStatus
    paused: bool
    agent_id: str = Field(min_length=1)
    previous: TicketStatus | None = None


class SlaClockChanged(TicketEvent):
    """A clock's life on the ticket. ``due_at`` is the breach time while running (None while
    paused or finished); ``business_seconds_used`` counts calendar time consumed so far."""
    clock: SlaClockName
    change: SlaClockChange
    policy: str
    calendar: str = "always"
    target_seconds: int = Field(ge=0, description="business seconds")
    business_seconds_used: float = Field(default=0.0, ge=0)
    due_at: AwareDatetime | None = None
    agent_id: str | None = None


class CsatSubmitted(TicketEvent):
    """One survey answer per ticket, taken through the signed link in the resolution mail."""
    score: int = Field(ge=1, le=5)
    comment: str = Field(default="", max_length=2000)
    channel: Channel
    agent_id: str | None = Field(default=None, description="who resolved the ticket")


class NotificationFailed(TicketEvent):
    """A notification the notifier gave up on: a permanent refusal (5xx) or its attempts spent
    (then it waits in the dead letters for ``ticketmesh notifications replay``)."""
    notification_id: str
    kind: str
    recipient: str = Field(description="masked")
    reason: str = Field(max_length=500)
    permanent: bool
    attempts: int = Field(ge=1)


class ChatEntry(BaseModel):
    """One line of a chat conversation as the customer saw it (transcript and missed-reply mail)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    author: Literal["customer", "agent"]
    name: str = Field(default="", max_length=200)
    text: str = Field(default="", max_length=100_000)
    sent_at: AwareDatetime
    files: list[str] = Field(default_factory=list, max_length=20, description="file names sent with it")


class ChatTranscriptRequested(TicketEvent):
    """The customer asked, in the widget, for the conversation by email (``to`` is the address
    they gave). intake_chat publishes it only after an agent took part, so it cannot be used
    to mail a stranger text of the requester's choosing alone."""

    customer: Customer
    to: str = Field(min_length=3, max_length=320)
    subject: str = Field(default="", max_length=1000)
    entries: list[ChatEntry] = Field(min_length=1, max_length=500)


class ChatReplyMissed(TicketEvent):
    """Agent replies that reached no widget of the customer within the configured delay (their
    socket went away): the notifier mails them to ``to``. ``up_to_seq`` is the transcript
    position of the last reply included (the event id is stable per ticket and position)."""

    customer: Customer
    to: str = Field(min_length=3, max_length=320)
    subject: str = Field(default="", max_length=1000)
    replies: list[ChatEntry] = Field(min_length=1, max_length=200)
    up_to_seq: int = Field(ge=1)


class ChatTyping(TicketEvent):
    """The customer is typing in the widget (at most one per ``typing`` window per ticket;
    consumers show it for a few seconds and need not keep it)."""

    typing: bool = True


class AgentTyping(TicketEvent):
    """An agent is typing a reply on a chat ticket; intake_chat shows it in the widget."""

    agent_id: str = Field(min_length=1)
    typing: bool = True


class SlaEvent(TicketEvent):
    clock: SlaClockName
    policy: str
    target_seconds: int
    due_at: AwareDatetime
    agent_id: str | None = None


class SlaWarning(SlaEvent):
    elapsed_fraction: float


class SlaBreached(SlaEvent):
    pass


class NotificationSent(TicketEvent):
    notification_id: str
    kind: str
    recipient: str = Field(description="masked")


class MailBounced(Envelope):
    """Mail we sent could not be delivered (a delivery status notification came back).

    ``ticket_id`` is set only when the report names a Message-ID we signed (anyone can send
    a bounce-shaped mail, so nothing else is trusted); ``hard`` is a permanent failure (status
    5.x.x). The notifier stops mailing a recipient only when the event names a ticket and it
    mailed that recipient about it. ``recipients`` are the failed addresses, lowercased.
    """

    recipients: list[str] = Field(min_length=1, max_length=50)
    status: str = Field(default="", max_length=16, description="DSN status code, e.g. 5.1.1")
    reason: str = Field(default="", max_length=500)
    hard: bool
    original_message_id: str | None = Field(default=None, max_length=998)
    reporting_mta: str = Field(default="", max_length=255)
    received_at: AwareDatetime


class InboundMailRejected(Envelope):
    """An inbound mail was refused (e.g. over the size limit) and its sender should be told.

    The notifier sends the polite rejection to ``to`` unless it is a system or bounced address.
    """

    to: str = Field(min_length=3, max_length=320)
    name: str = Field(default="", max_length=200)
    reason: Literal["too_large"]
    subject: str = Field(default="", max_length=1000)
    size: int = Field(ge=0)
    limit: int = Field(ge=0)
    language: str | None = Field(default=None, max_length=16)
    original_message_id: str | None = Field(default=None, max_length=998)
    received_at: AwareDatetime


SCHEMAS: dict[tuple[str, str], type[Envelope]] = {
    **{(svc, TICKET_RECEIVED): TicketReceived for svc in INTAKE_SERVICES},
    **{(svc, MESSAGE_RECEIVED): MessageReceived for svc in INTAKE_SERVICES},
    (DISPATCHER, TICKET_CLASSIFIED): TicketClassified,
    (DISPATCHER, TICKET_ASSIGNED): TicketAssigned,
    (DISPATCHER, TICKET_QUEUED): TicketQueued,
    (DISPATCHER, TICKET_UNASSIGNED): TicketUnassigned,
    (DISPATCHER, TICKET_TRANSFERRED): TicketTransferred,
    (AGENT_DESK, TICKET_DECLINED): TicketDeclined,
    (AGENT_DESK, TICKET_TRANSFER_REQUESTED): TicketTransferRequested,
    (AGENT_DESK, TICKET_REOPENED): TicketReopened,
    (SLA_WATCHER, TICKET_ESCALATED): TicketEscalated,
    (AGENT_DESK, TICKET_STATUS_CHANGED): TicketStatusChanged,
    (SLA_WATCHER, SLA_CLOCK_CHANGED): SlaClockChanged,
    (INTAKE_CHAT, CSAT_SUBMITTED): CsatSubmitted,
    (NOTIFIER, NOTIFICATION_FAILED): NotificationFailed,
    (DISPATCHER, TICKET_ATTACHED): TicketAttached,
    (AGENT_DESK, AGENT_PRESENCE_CHANGED): AgentPresenceChanged,
    (AGENT_DESK, TICKET_ACCEPTED): TicketAccepted,
    (AGENT_DESK, AGENT_REPLIED): AgentReplied,
    (AGENT_DESK, TICKET_RESOLVED): TicketResolved,
    (SLA_WATCHER, SLA_WARNING): SlaWarning,
    (SLA_WATCHER, SLA_BREACHED): SlaBreached,
    (NOTIFIER, NOTIFICATION_SENT): NotificationSent,
    (INTAKE_EMAIL, MAIL_BOUNCED): MailBounced,
    (INTAKE_EMAIL, MAIL_REJECTED): InboundMailRejected,
    (INTAKE_CHAT, CHAT_TRANSCRIPT_REQUESTED): ChatTranscriptRequested,
    (INTAKE_CHAT, CHAT_REPLY_MISSED): ChatReplyMissed,
    (INTAKE_CHAT, CHAT_TYPING): ChatTyping,
    (AGENT_DESK, AGENT_TYPING): AgentTyping,
}


def schema_for(source: str, event_type: str) -> type[Envelope]:
    try:
        return SCHEMAS[(source, event_type)]
    except KeyError:
        raise InvalidEvent(source, event_type, "unknown event type for this source") from None


def new_id() -> str:
    return uuid.uuid4().hex


def _one_line(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def make_event(source: str, event_type: str, /, *, now: datetime, trace_id: str, **fields: Any) -> dict:
    """Build a validated JSON-ready body for ``source``'s ``event_type``.

    ``now`` stamps ``occurred_at``; ``event_id`` is fresh unless given (a producer that may
    retry passes a stable one so consumers can dedupe).
    """
    schema = schema_for(source, event_type)
    unknown = set(fields) - set(schema.model_fields)
    if unknown:
        raise InvalidEvent(source, event_type, f"unknown fields {sorted(unknown)}")
    fields.setdefault("event_id", new_id())
    try:
        model = schema(
            occurred_at=now.astimezone(timezone.utc),
            schema_version=SCHEMA_VERSION,
            trace_id=trace_id,
            **fields,
        )
    except ValidationError as exc:
        raise InvalidEvent(source, event_type, _one_line(exc)) from None
    return model.model_dump(mode="json")


def parse_event(source: str, event_type: str, body: Any) -> Envelope:
    """Validate a consumed body; raise :class:`InvalidEvent` with a one-line reason."""
    schema = schema_for(source, event_type)
    if not isinstance(body, Mapping):
        raise InvalidEvent(source, event_type, f"body is {type(body).__name__}, not a JSON object")
    version = body.get("schema_version")
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise InvalidEvent(source, event_type, f"schema_version {version} is newer than {SCHEMA_VERSION}")
    try:
        return schema.model_validate(body)
    except ValidationError as exc:
        raise InvalidEvent(source, event_type, _one_line(exc)) from None


def parse_event_json(source: str, event_type: str, raw: bytes | str) -> Envelope:
    """:func:`parse_event` of a raw JSON body, as consumers receive it.

    pydantic parses and validates the bytes in one pass (no intermediate dicts); a body it
    refuses, or one of a newer schema version, goes through :func:`parse_event` instead, so
    what is accepted and the reasons given are exactly :func:`parse_event`'s.
    """
    try:
        event = schema_for(source, event_type).model_validate_json(raw)
    except ValidationError:
        pass
    else:
        if event.schema_version <= SCHEMA_VERSION:
            return event
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise InvalidEvent(source, event_type, f"body is not JSON: {exc}") from None
    return parse_event(source, event_type, body)
