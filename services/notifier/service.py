"""The notifier's event handlers: event → mail (messages.py) → outbox (outbox.py) → SMTP (delivery.py).

Consumes (handler name = queue name, wire contract):

- ``intake_<channel>.ticket_received`` → ``ack_<channel>_ticket_received``: keep the customer's
  contact record (audience.py), and acknowledge an email customer's ticket: at once if the
  dispatcher's classification is already known, else when it comes;
- ``dispatcher.ticket_attached`` → ``skip_attached_ack``: a contact folded into the customer's
  open ticket on another channel (mode attach) is never acknowledged: it is no new ticket;
- ``dispatcher.ticket_classified`` → ``ack_classified_ticket``: the priority gives the
  acknowledgement its expected response time (``sla_policy.expected_first_response``); if no
  classification comes within ``TM_NOTIFY_ACK_WAIT_SECONDS`` (dispatcher down, event dead-
  lettered), a sweeper acknowledges without a time: a customer is never left without an ack.
  Whichever of the two events is handled second sends (each writes its half of the contact
  hash, then reads the other half, in one transaction); the ack's id comes from the
  ``ticket_received`` event, so however it is reached, it is one mail;
- ``agent_desk.agent_replied`` → ``send_agent_reply``: email tickets by mail; never chat tickets
  (intake_chat relays a reply to the widget and, if no widget confirmed it within
  ``TM_CHAT_REPLY_EMAIL_DELAY_SECONDS``, publishes ``chat_reply_missed``, mailed below: one
  mechanism, so a chat reply is mailed at most once) nor phone ones;
- ``agent_desk.ticket_status_changed`` → ``notify_status_changed``: "waiting for your reply"
  (email tickets; a chat customer gets the agent's question itself, live or as a missed reply);
- ``agent_desk.ticket_resolved`` → ``notify_ticket_resolved``: the resolution mail, with the
  CSAT survey link for ``solved`` tickets whose customer has not answered one; nothing for
  ``spam`` and ``merged``, no survey for ``auto_closed``; chat customers who gave an address get
  it too (the widget shows the chat closed, but not the status and survey links);
- ``intake_chat.csat_submitted`` → ``record_csat_answer``: later resolutions ask no more;
- ``agent_desk.agent_presence_changed`` → ``track_agent_presence``: agent_desk pushes to an
  agent who is online (or away: the console is open); one offline gets mail instead;
- ``sla_watcher.sla_warning`` → ``notify_sla_warning``: 催办 to an offline assignee; robots;
- ``sla_watcher.ticket_escalated`` → ``notify_ticket_escalated``: the ladder's notify steps
  (``notify_assignee`` if offline, ``notify_supervisor`` → ``TM_SUPERVISOR_EMAIL``,
  ``notify_duty_manager`` → the roster's offline duty managers, else the supervisor address);
  every step to the robots that asked for it;
- ``dispatcher.ticket_assigned`` → ``notify_ticket_assigned``: a ticket handed to an offline
  agent without an offer (a transfer or reassignment) is mailed to them;
- ``sla_watcher.sla_breached`` → ``notify_sla_breached``: notice to the supervisor; robots;
- ``intake_email.mail_bounced`` → ``record_mail_bounced``: a hard bounce suppresses each
  recipient for 60 days, soft ones count (3 within 72 h suppress for a day); no mail of any
  kind goes to a suppressed address (``notification_skipped``, reason ``bounced_address``).
  Only a bounce of our own mail counts: it must name a ticket (intake_email sets one only for
  our signed Message-ID) and the recipient must be an address we mailed about that ticket;
  anything else is logged ``bounce_not_trusted`` and suppresses nothing, so a forged delivery
  report cannot stop our mail to somebody;
- ``intake_email.mail_rejected`` → ``send_mail_rejected``: the polite "too large" answer to
  the sender of a refused inbound mail (never to system or bounced addresses);
- ``intake_chat.chat_transcript_requested`` → ``send_chat_transcript``: the chat, to the address
  the customer gave in the widget (intake_chat asks only once an agent took part); automatic
  (marked and capped: the address is typed, unverified; see :mod:`loop_safety`);
- ``intake_chat.chat_reply_missed`` → ``send_missed_chat_replies``: agent replies no widget of
  the customer received (their socket went away), by mail; a person's words, so treated like
  ``agent_reply`` (not marked, not capped).

Emits ``notification_sent`` (recipient masked) once per mail about a ticket (a rejection names
no ticket, so it is only recorded as sent).

Group chat robots (webhooks.py) get the events deploy/config/notify.yaml routes to them. Each
robot message is claimed under its own id (event id + robot) before the post, so a redelivered
event posts nothing twice; a robot that is down or rate-limited makes the event retry (robots
already posted are skipped); a robot that refuses (bad signature, bad address) dead-letters
the event with the vendor's answer after the other robots had their turn.

Delivery, per mail: each has a deterministic id (triggering event_id + kind, + recipient for
staff notices). A handler renders the mail once and queues it in the outbox (:mod:`outbox`,
once per id: a redelivered event, or the ack reached from both ``ticket_received`` and
``ticket_classified``, queues nothing more), then acks the event; the delivery loop
(:mod:`delivery`) sends it, retries a relay that is away or answers 4xx with backoff,
dead-letters it after too many attempts or a 5xx (``notification_failed``; ``ticketmesh
notifications dead|show|replay``) and publishes ``notification_sent`` once the relay accepted
it. Loop safety (:mod:`loop_safety`, the one place it is decided): no automatic mail to system,
own or suppressed addresses; every kind but an agent's reply is automatic, marked as such and
capped per recipient in sliding windows (staff notices per ticket only: they are raised by
clocks and routing, never by the recipient's mail). What a kill -9 can cost is in
:mod:`delivery`.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from email.message import EmailMessage
from typing import Any, AsyncIterator, Callable, Mapping

from aiohttp import web

from services.notifier import audience as aud
from services.notifier import loop_safety, messages
from services.notifier.audience import AudienceStore, Classification, ContactRecord
from services.notifier.config import PLAIN, Settings
from services.notifier.delivery import DeliveryWorker
from services.notifier.mailer import SmtpConfig
from services.notifier.outbox import Letter, Outbox
from services.notifier.store import NotificationStore
from services.notifier.template_check import render_every_template
from services.notifier.webhooks import NotifyConfig, RobotPoster, RobotRejected, RobotUnavailable, load_notify_config
from shared import customer_links
from shared import events as ev
from shared import sla_policy
from shared.aio_service import AioService, ServiceContext
from shared.amqp import EventConsumer, EventPublisher
from shared.errors import TransientError, is_transient
from shared.logging import bound_event_context, get_logger, mask
from shared.reloading import ReloadingFile
from shared.roster import AgentProfile, RosterError, display_names, load_roster

log = get_logger(__name__)

SERVICE_NAME = ev.NOTIFIER
_INTAKES = ((ev.INTAKE_EMAIL, "email"), (ev.INTAKE_CHAT, "chat"), (ev.INTAKE_PHONE, "phone"))


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


# Presences in which agent_desk's console is open and pushes reach the agent.
LIVE_PRESENCES = ("online", "away")
ACK_SWEEP_MIN_SECONDS = 0.5
ACK_SWEEP_MAX_SECONDS = 5.0
ACK_SWEEP_BATCH = 50


class Roster:
    """The roster file, re-read when it changes (agents' addresses, languages, tiers). The
    notifier only reads it for mail, so an unreadable file means no agent mail, not a stop."""

    def __init__(self, path: str, now: float):
        self._file: ReloadingFile[dict[str, AgentProfile]] | None = None
        try:
            self._file = ReloadingFile(path, lambda _text: load_roster(path).by_id(), now=now, name="roster")
        except (RosterError, OSError) as exc:
            log.warning("roster_unavailable", error=str(exc))

    def agents(self, now: float) -> dict[str, AgentProfile]:
        return self._file.current(now) if self._file is not None else {}


@dataclass(frozen=True)
class CustomerLinks:
    base_url: str
    secret: bytes = field(repr=False)

    def url(self, ticket_id: str, purpose: customer_links.Purpose, now: datetime) -> str:
        return customer_links.url(self.base_url, self.secret, ticket_id, purpose, now=now)


@dataclass
class Notifier:
    store: NotificationStore
    outbox: Outbox
    publisher: EventPublisher
    sender: messages.Sender
    supervisor_email: str
    supervisor_locale: str
    zone: tzinfo
    agent_names: Mapping[str, str] = field(default_factory=dict)
    clock: Callable[[], datetime] = _utcnow
    audience: AudienceStore | None = None
    robots: RobotPoster | None = None
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    policies: tuple[sla_policy.Policy, ...] = ()
    links: CustomerLinks = field(default_factory=lambda: CustomerLinks(
        "http://127.0.0.1:8081", customer_links.DEV_SECRET.encode()))
    roster: Roster | None = None
    ack_wait_seconds: float = 30.0
    caps: loop_safety.Caps = field(default_factory=loop_safety.Caps)
    delivery: DeliveryWorker | None = None

    def subscribe(self, consumer: EventConsumer) -> None:
        for source, channel in _INTAKES:
            consumer.subscribe(source, ev.TICKET_RECEIVED, f"ack_{channel}_ticket_received", self.ack_ticket_received)
        consumer.subscribe(ev.DISPATCHER, ev.TICKET_CLASSIFIED, "ack_classified_ticket", self.ack_classified_ticket)
        consumer.subscribe(ev.DISPATCHER, ev.TICKET_ATTACHED, "skip_attached_ack", self.skip_attached_ack)
        consumer.subscribe(ev.AGENT_DESK, ev.AGENT_REPLIED, "send_agent_reply", self.send_agent_reply)
        consumer.subscribe(ev.AGENT_DESK, ev.TICKET_STATUS_CHANGED, "notify_status_changed", self.notify_status_changed)
        consumer.subscribe(ev.AGENT_DESK, ev.TICKET_RESOLVED, "notify_ticket_resolved", self.notify_ticket_resolved)
        consumer.subscribe(ev.INTAKE_CHAT, ev.CSAT_SUBMITTED, "record_csat_answer", self.record_csat_answer)
        consumer.subscribe(ev.AGENT_DESK, ev.AGENT_PRESENCE_CHANGED, "track_agent_presence", self.track_agent_presence)
        consumer.subscribe(ev.SLA_WATCHER, ev.SLA_WARNING, "notify_sla_warning", self.notify_sla_warning)
        consumer.subscribe(ev.SLA_WATCHER, ev.TICKET_ESCALATED, "notify_ticket_escalated", self.notify_ticket_escalated)
        consumer.subscribe(ev.DISPATCHER, ev.TICKET_ASSIGNED, "notify_ticket_assigned", self.notify_ticket_assigned)
        consumer.subscribe(ev.SLA_WATCHER, ev.SLA_BREACHED, "notify_sla_breached", self.notify_sla_breached)
        consumer.subscribe(ev.INTAKE_EMAIL, ev.MAIL_BOUNCED, "record_mail_bounced", self.record_mail_bounced)
        consumer.subscribe(ev.INTAKE_EMAIL, ev.MAIL_REJECTED, "send_mail_rejected", self.send_mail_rejected)
        consumer.subscribe(ev.INTAKE_CHAT, ev.CHAT_TRANSCRIPT_REQUESTED, "send_chat_transcript",
                           self.send_chat_transcript)
        consumer.subscribe(ev.INTAKE_CHAT, ev.CHAT_REPLY_MISSED, "send_missed_chat_replies",
                           self.send_missed_chat_replies)

    @property
    def _audience(self) -> AudienceStore:
        if self.audience is None:
            raise RuntimeError("Notifier.audience is not set")
        return self.audience

    # -- acknowledgement -------------------------------------------------------------------------

    async def ack_ticket_received(self, ticket: ev.TicketReceived) -> None:
        kind = messages.KIND_TICKET_ACK
        contact = messages.Contact.from_ticket(ticket)
        waits = ticket.channel == "email" and self.ack_wait_seconds > 0
        if ticket.channel == "email":
            await self.store.remember_ticket(ticket.ticket_id, subject=ticket.subject,
                                             customer_message_id=contact.customer_message_id)
        if waits:
            # Before the contact is saved: if the classification handler sends the ack in
            # between, its mark_acked removes this entry; if it ran before, we send below.
            await self._audience.ack_later(ticket.ticket_id, self.clock().timestamp() + self.ack_wait_seconds)
        classification = await self._audience.save_contact(
            contact, received_event_id=ticket.event_id, trace_id=ticket.trace_id, received_at=ticket.received_at,
            classification=ticket.channel == "email")
        if ticket.channel != "email":
            # A chat or phone address is typed by whoever is on the other end, unverified: an
            # automatic mail to it would let anyone make us mail anyone. Those customers see their
            # ticket in the widget (chat) or are called back (phone).
            log.info("notification_skipped", kind=kind, reason="address_not_verified", channel=ticket.channel)
            return
        if classification is None and waits:
            log.info("ack_waits_for_classification", wait_seconds=self.ack_wait_seconds)
            return
        await self._acknowledge(ticket, contact, ticket.event_id, classification)

    async def ack_classified_ticket(self, classified: ev.TicketClassified) -> None:
        if classified.channel != "email":
            return  # only email tickets are acknowledged: their classification is never read
        record = await self._audience.save_classification(classified.ticket_id, Classification(
            priority=classified.priority, customer_tier=classified.customer_tier, received_at=classified.received_at))
        if record is None or record.contact.channel != "email" or record.acked:
            return  # ticket_received not handled yet (it will send), not mail, or done
        await self._acknowledge(classified, record.contact, record.received_event_id, record.classification)

    async def skip_attached_ack(self, attached: ev.TicketAttached) -> None:
        """A contact the dispatcher folded into the customer's open ticket is no new ticket: it is
        never classified, and its number would mean nothing to the customer, so the sweeper must
        not acknowledge it either. (A linked contact is a ticket of its own and is acknowledged.)"""
        if attached.mode != "attach":
            return
        await self._audience.skip_ack(attached.ticket_id)
        log.info("notification_skipped", kind=messages.KIND_TICKET_ACK, reason="attached_to_open_ticket",
                 into_ticket_id=attached.into_ticket_id)

    async def sweep_acks(self) -> int:
        """Acknowledge tickets whose classification did not come in time; returns how many were
        handled. Run every few seconds by every replica (a lease keeps them from colliding)."""
        now = self.clock()
        handled = 0
        while True:  # batch after batch: a dispatcher outage can leave many waiting
            due = await self._audience.lease_due_acks(now.timestamp(), ACK_SWEEP_BATCH)
            for ticket_id in due:
                handled += await self._ack_overdue(ticket_id, now)
            if len(due) < ACK_SWEEP_BATCH:
                return handled

    async def _ack_overdue(self, ticket_id: str, now: datetime) -> int:
        """1 if the acknowledgement went out (now or on an earlier try), else 0."""
        record = await self._audience.contact(ticket_id)
        if record is None or record.acked or record.contact.channel != "email":
            await self._audience.forget_due_ack(ticket_id)
            return 0
        envelope = ev.TicketEvent(event_id=record.received_event_id, occurred_at=now,
                                  schema_version=ev.SCHEMA_VERSION, trace_id=record.trace_id, ticket_id=ticket_id)
        with bound_event_context(trace_id=record.trace_id, ticket_id=ticket_id):
            log.info("ack_without_classification", waited_seconds=round((now - record.received_at).total_seconds()))
            try:
                await self._acknowledge(envelope, record.contact, record.received_event_id, record.classification)
            except Exception as exc:  # noqa: BLE001 - sorted: retry after the lease, or give up
                if is_transient(exc):
                    log.warning("ack_retry_later", error=repr(exc))  # the lease runs out, the next sweep retries
                    return 0
                log.exception("ack_failed")
                await self._audience.forget_due_ack(ticket_id)
                return 0
        return 1

    async def _acknowledge(self, event: ev.Envelope, contact: messages.Contact, received_event_id: str,
                           classification: Classification | None) -> None:
        kind = messages.KIND_TICKET_ACK
        if not await self._may_send(kind, contact.email, automatic=True):
            await self._audience.mark_acked(contact.ticket_id)  # nothing left to wait for
            return
        now = self.clock()
        expected_by = None
        if classification is not None:
            expected_by = sla_policy.expected_first_response(
                self.policies, priority=classification.priority, channel=contact.channel,
                received_at=classification.received_at, customer_tier=classification.customer_tier)
            if expected_by is not None and expected_by <= now:
                expected_by = None  # late (a backlog): promise nothing rather than a time gone by
        nid = messages.notification_id(received_event_id, kind)
        mail = messages.ticket_ack(contact, sender=self.sender, notification=nid, now=now,
                                   status_url=self.links.url(contact.ticket_id, "status", now),
                                   expected_by=expected_by, zone=self.zone)
        await self._deliver(event, kind, nid, mail)
        await self.store.remember_ack(contact.ticket_id, mail["Message-ID"])  # same id on every attempt
        await self._audience.mark_acked(contact.ticket_id)

    # -- customers after the acknowledgement -----------------------------------------------------

    async def _customer_to_mail(self, ticket_id: str, kind: str) -> ContactRecord | None:
        """The ticket's customer if they are to be told by mail now, else None (logged why)."""
        record = await self._audience.contact(ticket_id)
        reason = None
        if record is None:
            reason = "no_contact"  # ticket_received not seen, or expired
        elif record.contact.channel == "phone":
            reason = "phone_customer"  # a callback, not mail: their address (if any) is unverified
        elif record.contact.channel == "chat" and kind == messages.KIND_TICKET_WAITING:
            reason = "chat_customer"  # the agent's question reaches them itself: live, or as a missed reply
        if reason is not None:
            log.info("notification_skipped", kind=kind, reason=reason)
            return None
        return record

    async def send_agent_reply(self, reply: ev.AgentReplied) -> None:
        kind = messages.KIND_AGENT_REPLY
        if reply.channel != "email":
            # Chat: intake_chat's missed-reply signal is the one way a chat reply is mailed
            # (send_missed_chat_replies). Phone: a callback, not mail.
            log.info("notification_skipped", kind=kind, reason=f"{reply.channel}_channel")
            return
        thread = await self.store.thread(reply.ticket_id)
        if not await self._may_send(kind, reply.customer.email, automatic=False):
            return
        nid = messages.notification_id(reply.event_id, kind)
        mail = messages.agent_reply(
            reply, agent_name=self.agent_names.get(reply.agent_id, reply.agent_id),
            thread=thread, sender=self.sender, notification=nid, now=self.clock(),
        )
        # The thread's newest once queued (what the next reply answers, even if this one is still
        # on its way); a redelivered older reply queues nothing, so it cannot overwrite a later one.
        await self._deliver(reply, kind, nid, mail, thread_reply=True)

    async def notify_status_changed(self, changed: ev.TicketStatusChanged) -> None:
        kind = messages.KIND_TICKET_WAITING
        if changed.status != "waiting_on_customer" or changed.previous == "waiting_on_customer":
            return  # open / on hold are the team's business, not the customer's
        if not self.notify.waiting_on_customer_notice:
            log.info("notification_skipped", kind=kind, reason="switched_off")
            return
        record = await self._customer_to_mail(changed.ticket_id, kind)
        if record is None or not await self._may_send(kind, record.contact.email, automatic=True):
            return
        now = self.clock()
        nid = messages.notification_id(changed.event_id, kind)
        mail = messages.ticket_waiting(
            record.contact, agent_name=self.agent_names.get(changed.agent_id, ""),
            thread=await self.store.thread(changed.ticket_id), status_url=self.links.url(changed.ticket_id, "status", now),
            sender=self.sender, notification=nid, now=now)
        await self._deliver(changed, kind, nid, mail)

    async def notify_ticket_resolved(self, resolved: ev.TicketResolved) -> None:
        kind = messages.KIND_TICKET_RESOLVED
        if resolved.resolution in ("spam", "merged"):
            # Spam gets no answer at all; a merged ticket's customer hears on the surviving one.
            log.info("notification_skipped", kind=kind, reason=f"resolution_{resolved.resolution}")
            return
        record = await self._customer_to_mail(resolved.ticket_id, kind)
        if record is None or not await self._may_send(kind, record.contact.email, automatic=True):
            return
        now = self.clock()
        survey = self._survey_reason(resolved, record)
        if survey is not None:
            log.info("csat_not_asked", reason=survey)
        nid = messages.notification_id(resolved.event_id, kind)
        mail = messages.ticket_resolved(
            record.contact, agent_name=self.agent_names.get(resolved.agent_id, ""),
            thread=await self.store.thread(resolved.ticket_id),
            status_url=self.links.url(resolved.ticket_id, "status", now),
            csat_url=self.links.url(resolved.ticket_id, "csat", now) if survey is None else None,
            sender=self.sender, notification=nid, now=now)
        await self._deliver(resolved, kind, nid, mail)

    def _survey_reason(self, resolved: ev.TicketResolved, record: ContactRecord) -> str | None:
        """Why no CSAT survey goes with this resolution, or None to ask for one."""
        if resolved.resolution != "solved":
            return resolved.resolution  # auto_closed: nobody helped them, nothing to rate
        if not self.notify.csat_survey:
            return "switched_off"
        if record.csat_answered:
            return "already_answered"  # one answer per ticket, even after a reopen
        return None

    async def record_csat_answer(self, answer: ev.CsatSubmitted) -> None:
        await self._audience.mark_csat_answered(answer.ticket_id)
        log.info("csat_answer_noted", score=answer.score)

    # -- agents and supervisors --------------------------------------------------------------------

    async def track_agent_presence(self, changed: ev.AgentPresenceChanged) -> None:
        if not await self._audience.set_presence(changed.agent_id, changed.presence, changed.occurred_at.timestamp()):
            log.info("presence_event_stale", agent_id=changed.agent_id, presence=changed.presence)

    def _agents(self) -> dict[str, AgentProfile]:
        return self.roster.agents(self.clock().timestamp()) if self.roster is not None else {}

    def _colleague(self, profile: AgentProfile) -> messages.Colleague | None:
        if not profile.email:
            return None
        return messages.Colleague(address=profile.email, name=profile.name,
                                  locale=messages.locale_of_languages(profile.languages), agent_id=profile.agent_id)

    async def _subject(self, ticket_id: str) -> str:
        record = await self._audience.contact(ticket_id)
        return record.contact.subject if record is not None else ""

    async def _offline_colleague(self, kind: str, agent_id: str) -> messages.Colleague | None:
        """``agent_id`` to mail, or None if agent_desk can push to them (their console is open)
        or they have no address (logged why)."""
        presence = await self._audience.presence(agent_id)
        if presence in LIVE_PRESENCES:
            log.info("notification_skipped", kind=kind, reason="agent_online", agent_id=agent_id)
            return None
        profile = self._agents().get(agent_id)
        colleague = self._colleague(profile) if profile is not None else None
        if colleague is None:
            log.info("notification_skipped", kind=kind, reason="no_agent_email", agent_id=agent_id)
        return colleague

    async def _tell_agent_if_offline(self, event: ev.TicketEvent, kind: str, agent_id: str,
                                     build: Callable[[messages.Colleague, str], EmailMessage]) -> None:
        """Mail ``agent_id`` unless agent_desk can push to them (their console is open)."""
        colleague = await self._offline_colleague(kind, agent_id)
        if colleague is not None:
            await self._tell(event, kind, colleague, build)

    async def _tell(self, event: ev.TicketEvent, kind: str, to: messages.Colleague,
                    build: Callable[[messages.Colleague, str], EmailMessage]) -> None:
        if not await self._may_send(kind, to.address, automatic=True):
            return
        # One mail per recipient of the event: the id names who it is for.
        nid = messages.notification_id(event.event_id, f"{kind}:{to.agent_id or to.address.lower()}")
        await self._deliver(event, kind, nid, build(to, nid))

    async def notify_sla_warning(self, warning: ev.SlaWarning) -> None:
        kind = messages.KIND_SLA_WARNING
        colleague = await self._offline_colleague(kind, warning.agent_id) if warning.agent_id else None
        if colleague is not None:
            subject = await self._subject(warning.ticket_id)  # read only for a mail: most assignees are online
            await self._tell(warning, kind, colleague, lambda to, nid: messages.sla_warning_notice(
                warning, to=to, subject=subject, sender=self.sender, notification=nid, now=self.clock(), zone=self.zone))
        elif not warning.agent_id:
            log.info("notification_skipped", kind=kind, reason="no_assignee")
        await self._tell_robots(warning, ev.SLA_WARNING, None, "robot_sla_warning", dict(
            ticket_id=warning.ticket_id, clock=warning.clock, policy=warning.policy,
            due_at=messages.local_minute(warning.due_at, self.zone), percent=f"{warning.elapsed_fraction * 100:.0f}",
            agent_id=warning.agent_id, assignee_name=self.agent_names.get(warning.agent_id or "", "")))

    async def notify_ticket_escalated(self, escalated: ev.TicketEscalated) -> None:
        kind = messages.KIND_ESCALATION
        subject = await self._subject(escalated.ticket_id)
        assignee_name = self.agent_names.get(escalated.agent_id) if escalated.agent_id else None

        def build(audience: str) -> Callable[[messages.Colleague, str], EmailMessage]:
            return lambda to, nid: messages.escalation_notice(
                escalated, to=to, audience=audience, assignee_name=assignee_name, subject=subject, sender=self.sender,
                notification=nid, now=self.clock())

        supervisor = messages.Colleague(address=self.supervisor_email, locale=self.supervisor_locale)
        if escalated.action == "notify_assignee":
            if escalated.agent_id:
                await self._tell_agent_if_offline(escalated, kind, escalated.agent_id, build("assignee"))
            else:
                log.info("notification_skipped", kind=kind, reason="no_assignee")
        elif escalated.action == "notify_supervisor":
            await self._tell(escalated, kind, supervisor, build("supervisor"))
        elif escalated.action == "notify_duty_manager":
            managers = [p for p in self._agents().values() if p.tier == "duty_manager" and p.email]
            if not managers:
                await self._tell(escalated, kind, supervisor, build("duty_manager"))
            for manager in managers:
                await self._tell_agent_if_offline(escalated, kind, manager.agent_id, build("duty_manager"))
        await self._tell_robots(escalated, ev.TICKET_ESCALATED, escalated.action, "robot_ticket_escalated", dict(
            ticket_id=escalated.ticket_id, level=escalated.level, action=escalated.action,
            reason=" ".join(escalated.reason.split()), trigger=escalated.trigger, policy=escalated.policy,
            agent_id=escalated.agent_id, assignee_name=assignee_name or ""))

    async def notify_ticket_assigned(self, assigned: ev.TicketAssigned) -> None:
        if assigned.offer_expires_at is not None:
            return  # an offer: only an agent at the console can accept it before it runs out
        colleague = await self._offline_colleague(messages.KIND_ASSIGNMENT, assigned.agent_id)
        if colleague is None:
            return
        subject = await self._subject(assigned.ticket_id)  # read only for a mail: most assignees are online
        await self._tell(assigned, messages.KIND_ASSIGNMENT, colleague, lambda to, nid: messages.assignment_notice(
            assigned, to=to, subject=subject, sender=self.sender, notification=nid, now=self.clock()))

    async def notify_sla_breached(self, breach: ev.SlaBreached) -> None:
        kind = messages.KIND_SLA_BREACHED
        assignee = self.agent_names.get(breach.agent_id) if breach.agent_id else None
        if await self._may_send(kind, self.supervisor_email, automatic=True):
            nid = messages.notification_id(breach.event_id, kind)
            mail = messages.sla_breach_notice(
                breach, to=self.supervisor_email, locale=self.supervisor_locale, assignee_name=assignee,
                sender=self.sender, notification=nid, now=self.clock(), zone=self.zone,
            )
            await self._deliver(breach, kind, nid, mail)
        await self._tell_robots(breach, ev.SLA_BREACHED, None, "robot_sla_breached", dict(
            ticket_id=breach.ticket_id, clock=breach.clock, policy=breach.policy,
            due_at=messages.local_minute(breach.due_at, self.zone), agent_id=breach.agent_id,
            assignee_name=assignee or ""))

    # -- group chat robots -------------------------------------------------------------------------

    async def _tell_robots(self, event: ev.Envelope, event_type: str, action: str | None, template: str,
                           values: dict[str, Any]) -> None:
        robots = self.notify.robots_for(event_type, action)
        if not robots:
            return
        if self.robots is None:
            raise RuntimeError("robots are configured but Notifier.robots is not set")
        refused: list[str] = []
        for robot in robots:
            nid = messages.notification_id(event.event_id, f"robot:{robot.name}")
            state = await self._audience.claim_robot_message(nid)
            if state == aud.SENT:
                log.info("robot_message_already_sent", robot=robot.name)
                continue
            if state == aud.SENDING:
                raise TransientError(f"robot message {nid} is being posted by another worker")
            try:
                if not await self._audience.take_robot_rate(robot.name, robot.max_per_minute,
                                                            self.clock().timestamp()):
                    raise RobotUnavailable(f"robot {robot.name}: {robot.max_per_minute} messages a minute reached")
                title, text = messages.robot_text(template, robot.language, **values)
                await self.robots.post(robot, title, text, now=self.clock())
            except RobotRejected as exc:
                await self._audience.release_robot_message(nid)
                log.warning("robot_rejected", robot=robot.name, robot_kind=robot.kind, error=str(exc))
                refused.append(str(exc))
                continue
            except BaseException:
                await asyncio.shield(self._audience.release_robot_message(nid))
                raise
            await self._audience.mark_robot_message_sent(nid)
            log.info("robot_message_sent", robot=robot.name, robot_kind=robot.kind, event_type=event_type, action=action)
        if refused:
            raise RobotRejected("; ".join(refused))  # dead letter: replay once the robot is fixed

    async def record_mail_bounced(self, bounce: ev.MailBounced) -> None:
        at = bounce.received_at.timestamp()
        mailed = await self.store.mailed_about(bounce.ticket_id, bounce.recipients) if bounce.ticket_id else set()
        suppress, ignore = messages.trusted_bounce(bounce.ticket_id, bounce.recipients, mailed)
        for address in ignore:
            log.warning("bounce_not_trusted", recipient=mask(address), ticket_id=bounce.ticket_id,
                        why="not_mailed_for_ticket" if bounce.ticket_id else "no_ticket_of_ours")
        for address in suppress:
            if bounce.hard:
                await self.store.mark_hard_bounced(address)
                log.info("address_bounced", recipient=mask(address), hard=True, status=bounce.status,
                         ticket_id=bounce.ticket_id)
            else:
                count = await self.store.record_soft_bounce(address, bounce.event_id, at)
                log.info("address_bounced", recipient=mask(address), hard=False, status=bounce.status,
                         soft_bounces=count, ticket_id=bounce.ticket_id)

    async def send_mail_rejected(self, rejected: ev.InboundMailRejected) -> None:
        kind = messages.KIND_MAIL_REJECTED
        if not await self._may_send(kind, rejected.to, automatic=True):
            return
        nid = messages.notification_id(rejected.event_id, kind)
        mail = messages.rejection_notice(rejected, sender=self.sender, notification=nid, now=self.clock())
        await self._deliver(rejected, kind, nid, mail)

    async def send_chat_transcript(self, request: ev.ChatTranscriptRequested) -> None:
        kind = messages.KIND_CHAT_TRANSCRIPT
        if not await self._may_send(kind, request.to, automatic=True):
            return
        nid = messages.notification_id(request.event_id, kind)
        mail = messages.chat_transcript(request, sender=self.sender, notification=nid, now=self.clock(), zone=self.zone)
        await self._deliver(request, kind, nid, mail)

    async def send_missed_chat_replies(self, missed: ev.ChatReplyMissed) -> None:
        kind = messages.KIND_CHAT_REPLY_MISSED
        if not await self._may_send(kind, missed.to, automatic=False):
            return
        nid = messages.notification_id(missed.event_id, kind)
        mail = messages.missed_chat_replies(missed, sender=self.sender, notification=nid, now=self.clock(),
                                            zone=self.zone)
        await self._deliver(missed, kind, nid, mail)

    async def _may_send(self, kind: str, address: str | None, *, automatic: bool) -> bool:
        bounced = bool(address) and await self.store.is_bounced(address or "")
        reason = loop_safety.skip_reason(address, automatic=automatic, bounced=bounced,
                                         own_address=self.sender.address)
        if reason is not None:
            log.info("notification_skipped", kind=kind, reason=reason, recipient=mask(address or ""))
        return reason is None

    async def _deliver(self, event: ev.Envelope, kind: str, nid: str, mail: EmailMessage, *,
                       thread_reply: bool = False) -> bool:
        """Queue ``mail`` for delivery, once per notification id; True if this call queued it.

        Automatic mail (every kind but an agent's reply) is marked so and counted against the
        recipient's caps (:func:`loop_safety.caps_for`); over a cap it is skipped
        (``notification_skipped``, reason ``loop_cap``).
        ``thread_reply``: once queued, it is the ticket thread's newest reply.
        """
        recipient = str(mail["To"].addresses[0].addr_spec)
        automatic = loop_safety.is_automatic(kind)
        if automatic:
            loop_safety.mark_automatic(mail, self.sender.address)
        if event.ticket_id is not None:
            # Before the send: a bounce may come back even if we die before recording it sent.
            await self.store.remember_recipient(event.ticket_id, recipient)
        letter = Letter.render(nid, kind, event.ticket_id, event.trace_id, mail, sender=self.sender.address,
                               automatic=automatic)
        queued = await self.outbox.enqueue(letter, self.clock().timestamp(), loop_safety.caps_for(kind, self.caps))
        if queued.outcome == "capped":
            assert queued.window is not None
            log.warning("notification_skipped", kind=kind, reason=loop_safety.LOOP_CAP, recipient=mask(recipient),
                        notification_id=nid, scope=queued.scope, window=queued.window.label())
            return False
        if queued.outcome == "existing":
            log.info("notification_already_queued", kind=kind, notification_id=nid, state=queued.state)
            return False
        log.info("notification_queued", kind=kind, notification_id=nid, recipient=mask(recipient))
        if thread_reply and event.ticket_id is not None:
            await self.store.remember_reply(event.ticket_id, letter.message_id)
        if self.delivery is not None:
            self.delivery.wake()
        return True


NOTIFIER_KEY = web.AppKey("notifier", Notifier)


def ack_sweep_interval(ack_wait_seconds: float) -> float:
    """A few sweeps per wait: an overdue ack goes out within a fraction of the wait."""
    return min(ACK_SWEEP_MAX_SECONDS, max(ACK_SWEEP_MIN_SECONDS, ack_wait_seconds / 4))


def create_service(settings: Settings, *, environ: Mapping[str, str] | None = None) -> AioService:
    """The notifier as an AioService: consumers, the delivery loop, the acknowledgement sweeper,
    and a /healthz endpoint for probes. ``environ`` holds the robots' addresses and secrets
    (default: os.environ)."""
    names = display_names(settings.roster_file)
    # Checked before anything connects: a bad file, template or policy stops the start.
    notify = load_notify_config(settings.notify_config_file, os.environ if environ is None else environ)
    messages.use_templates_from(settings.templates_dir)
    render_every_template()
    policies = sla_policy.load_policies(settings.sla_policy_file)

    def build_app(ctx: ServiceContext) -> web.Application:
        if settings.mail_token_secret_is_dev_default:  # here: logging is configured by now
            log.warning("mail_token_secret_is_dev_default",
                        hint="set TM_MAIL_TOKEN_SECRET: anyone can forge ticket tokens with the default")
        if settings.customer_link_secret_is_dev_default:
            log.warning("customer_link_secret_is_dev_default",
                        hint="set TM_CUSTOMER_LINK_SECRET: anyone can open status pages and surveys with the default")
        poster = RobotPoster()
        store, outbox = NotificationStore(ctx.redis), Outbox(ctx.redis)
        delivery = settings.delivery
        smtp = SmtpConfig(settings.smtp_host, settings.smtp_port, settings.smtp_user, settings.smtp_password,
                          delivery.tls, delivery.ca_file, settings.smtp_timeout)
        if smtp.username and smtp.tls == PLAIN:
            log.warning("smtp_auth_without_tls", hint="the SMTP password crosses the network in clear: "
                        "set TM_SMTP_STARTTLS or TM_SMTP_TLS")
        worker = DeliveryWorker(outbox, store, smtp, ctx.publisher, delivery, service=SERVICE_NAME)
        notifier = Notifier(
            store=store,
            outbox=outbox,
            publisher=ctx.publisher,
            sender=messages.Sender(settings.mail_from, settings.mail_from_name, settings.mail_token_secret),
            supervisor_email=settings.supervisor_email,
            supervisor_locale=settings.supervisor_language,
            zone=settings.mail_timezone,
            agent_names=names,
            audience=AudienceStore(ctx.redis),
            robots=poster,
            notify=notify,
            policies=policies,
            links=CustomerLinks(settings.customer_base_url, settings.customer_link_secret),
            roster=Roster(settings.roster_file, now=_utcnow().timestamp()),
            ack_wait_seconds=settings.ack_wait_seconds,
            caps=delivery.caps,
            delivery=worker,
        )
        notifier.subscribe(ctx.consumer)
        app = ctx.new_app()
        app[NOTIFIER_KEY] = notifier

        async def robots_session(_app: web.Application) -> AsyncIterator[None]:
            await poster.start()
            yield
            await poster.close()

        async def ack_sweeper(_app: web.Application) -> AsyncIterator[None]:
            task = asyncio.create_task(_sweep_forever(notifier, ack_sweep_interval(settings.ack_wait_seconds)))
            yield
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        async def delivery_loop(_app: web.Application) -> AsyncIterator[None]:
            await worker.start()
            yield
            # After the sweeper stopped queueing, before the broker and Redis close: attempts
            # under way finish and are recorded.
            await worker.stop()

        # Cleanup runs in reverse: the sweeper stops first, the delivery loop last.
        app.cleanup_ctx.append(delivery_loop)
        app.cleanup_ctx.append(robots_session)
        if settings.ack_wait_seconds > 0:
            app.cleanup_ctx.append(ack_sweeper)
        log.info("notifier_configured", robots=[r.name for r in notify.robots], ack_wait_seconds=settings.ack_wait_seconds,
                 csat_survey=notify.csat_survey, templates_dir=settings.templates_dir)
        return app

    return AioService(SERVICE_NAME, settings.common, build_app, host=settings.host, port=settings.port)


async def _sweep_forever(notifier: Notifier, interval: float) -> None:
    while True:
        try:
            await notifier.sweep_acks()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - Redis away: try again next round
            log.warning("ack_sweep_failed", error=repr(exc))
        await asyncio.sleep(interval)
