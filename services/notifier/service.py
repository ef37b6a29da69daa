"""The notifier's event handlers: event → mail (messages.py) → SMTP (mailer.py) → record.

Consumes (handler name = queue name, wire contract):

- ``intake_<channel>.ticket_received`` → ``ack_<channel>_ticket_received``: acknowledge the
  new ticket to a customer who has an email address;
- ``agent_desk.agent_replied`` → ``send_agent_reply``: email channel only (chat replies are
  relayed by intake_chat, phone has no mail);
- ``sla_watcher.sla_breached`` → ``notify_sla_breached``: notice to the supervisor;
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
  the customer gave in the widget (intake_chat asks only once an agent took part);
- ``intake_chat.chat_reply_missed`` → ``send_missed_chat_replies``: agent replies no widget of
  the customer received (their socket went away), by mail.

Emits ``notification_sent`` (recipient masked) once per mail about a ticket (a rejection names
no ticket, so it is only recorded as sent).

Failure policy, per mail: each has a deterministic id (triggering event_id + kind), claimed
in Redis before sending, so a redelivered event sends nothing twice. SMTP away or answering
4xx → TransientError: the claim is released and the event returns to its queue after a pause.
SMTP answering 5xx → ``notification_rejected`` is logged, the claim released and
NotificationRejected raised, which dead-letters the event with the server's answer (replay it
once the cause, e.g. relay configuration, is fixed). If the process dies between the SMTP
server's "250" and the record, the claim expires and the mail goes out again: at-least-once,
with the same Message-ID, so mail clients show it once.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from email.message import EmailMessage
from typing import Awaitable, Callable, Mapping

from aiohttp import web

from services.notifier import messages
from services.notifier.config import Settings
from services.notifier.mailer import NotificationRejected, SmtpMailer
from services.notifier.store import ANNOUNCED, CLAIMED, SENDING, NotificationStore
from shared import events as ev
from shared.aio_service import AioService, BrokerUnavailable, ServiceContext, publish_confirmed
from shared.amqp import EventConsumer, EventPublisher
from shared.errors import TransientError
from shared.logging import get_logger, mask
from shared.roster import display_names

log = get_logger(__name__)

SERVICE_NAME = ev.NOTIFIER
_INTAKES = ((ev.INTAKE_EMAIL, "email"), (ev.INTAKE_CHAT, "chat"), (ev.INTAKE_PHONE, "phone"))


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Notifier:
    store: NotificationStore
    mailer: SmtpMailer
    publisher: EventPublisher
    sender: messages.Sender
    supervisor_email: str
    supervisor_locale: str
    zone: tzinfo
    agent_names: Mapping[str, str] = field(default_factory=dict)
    clock: Callable[[], datetime] = _utcnow

    def subscribe(self, consumer: EventConsumer) -> None:
        for source, channel in _INTAKES:
            consumer.subscribe(source, ev.TICKET_RECEIVED, f"ack_{channel}_ticket_received", self.ack_ticket_received)
        consumer.subscribe(ev.AGENT_DESK, ev.AGENT_REPLIED, "send_agent_reply", self.send_agent_reply)
        consumer.subscribe(ev.SLA_WATCHER, ev.SLA_BREACHED, "notify_sla_breached", self.notify_sla_breached)
        consumer.subscribe(ev.INTAKE_EMAIL, ev.MAIL_BOUNCED, "record_mail_bounced", self.record_mail_bounced)
        consumer.subscribe(ev.INTAKE_EMAIL, ev.MAIL_REJECTED, "send_mail_rejected", self.send_mail_rejected)
        consumer.subscribe(ev.INTAKE_CHAT, ev.CHAT_TRANSCRIPT_REQUESTED, "send_chat_transcript",
                           self.send_chat_transcript)
        consumer.subscribe(ev.INTAKE_CHAT, ev.CHAT_REPLY_MISSED, "send_missed_chat_replies",
                           self.send_missed_chat_replies)

    async def ack_ticket_received(self, ticket: ev.TicketReceived) -> None:
        kind = messages.KIND_TICKET_ACK
        if ticket.channel != "email":
            # A chat or phone address is typed by whoever is on the other end, unverified: an
            # automatic mail to it would let anyone make us mail anyone. Those customers see their
            # ticket in the widget (chat) or are called back (phone).
            log.info("notification_skipped", kind=kind, reason="address_not_verified", channel=ticket.channel)
            return
        customer_message_id = messages.normalize_message_id(ticket.source.get("message_id"))
        await self.store.remember_ticket(ticket.ticket_id, subject=ticket.subject,
                                         customer_message_id=customer_message_id)
        if not await self._may_send(kind, ticket.customer.email, automatic=True):
            return
        nid = messages.notification_id(ticket.event_id, kind)
        mail = messages.ticket_ack(ticket, sender=self.sender, notification=nid, now=self.clock())
        await self._deliver(ticket, kind, nid, mail)
        await self.store.remember_ack(ticket.ticket_id, mail["Message-ID"])  # same id on every attempt

    async def send_agent_reply(self, reply: ev.AgentReplied) -> None:
        if reply.channel != "email":
            return
        kind = messages.KIND_AGENT_REPLY
        if not await self._may_send(kind, reply.customer.email, automatic=False):
            return
        nid = messages.notification_id(reply.event_id, kind)
        mail = messages.agent_reply(
            reply, agent_name=self.agent_names.get(reply.agent_id, reply.agent_id),
            thread=await self.store.thread(reply.ticket_id), sender=self.sender, notification=nid, now=self.clock(),
        )
        # Only a mail that just went out becomes the thread's newest (a redelivered older reply
        # must not overwrite a later one); it is recorded before the announcement, which may fail
        # and be retried with the mail already sent.
        await self._deliver(reply, kind, nid, mail,
                            after_sent=lambda: self.store.remember_reply(reply.ticket_id, mail["Message-ID"]))

    async def notify_sla_breached(self, breach: ev.SlaBreached) -> None:
        kind = messages.KIND_SLA_BREACHED
        if not await self._may_send(kind, self.supervisor_email, automatic=True):
            return
        nid = messages.notification_id(breach.event_id, kind)
        assignee = self.agent_names.get(breach.agent_id) if breach.agent_id else None
        mail = messages.sla_breach_notice(
            breach, to=self.supervisor_email, locale=self.supervisor_locale, assignee_name=assignee,
            sender=self.sender, notification=nid, now=self.clock(), zone=self.zone,
        )
        await self._deliver(breach, kind, nid, mail)

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
        reason = messages.skip_reason(address, automatic=automatic, bounced=bounced)
        if reason is not None:
            log.info("notification_skipped", kind=kind, reason=reason, recipient=mask(address or ""))
        return reason is None

    async def _deliver(self, event: ev.Envelope, kind: str, nid: str, mail: EmailMessage,
                       after_sent: Callable[[], Awaitable[None]] | None = None) -> bool:
        """Send ``mail`` unless it already went out; True if it was sent by this call.

        ``after_sent`` runs once the SMTP server accepted the mail, before it is announced.
        """
        recipient = mask(str(mail["To"].addresses[0].addr_spec))
        state = await self.store.claim(nid)
        if state == SENDING:
            raise TransientError(f"notification {nid} is being sent by another worker")
        sent_now = state == CLAIMED
        if sent_now:
            if event.ticket_id is not None:
                # Before the send: a bounce may come back even if we die before recording it sent.
                await self.store.remember_recipient(event.ticket_id, str(mail["To"].addresses[0].addr_spec))
            try:
                await self.mailer.send(mail)
            except NotificationRejected as exc:
                log.warning("notification_rejected", kind=kind, notification_id=nid, recipient=recipient,
                            smtp_code=exc.code, smtp_reply=mask(exc.reply))
                await self.store.release(nid)
                raise
            except BaseException:
                await asyncio.shield(self.store.release(nid))
                raise
            await self.store.mark_sent(nid)
            if after_sent is not None:
                await after_sent()
            log.info("notification_sent", kind=kind, notification_id=nid, recipient=recipient)
        else:
            log.info("notification_already_sent", kind=kind, notification_id=nid)
        if state != ANNOUNCED:
            await self._announce(event, kind, nid, recipient)
        return sent_now

    async def _announce(self, event: ev.Envelope, kind: str, nid: str, recipient: str) -> None:
        if event.ticket_id is None:
            # notification_sent is about a ticket; a mail about none (a rejection) is only recorded.
            await self.store.mark_announced(nid)
            return
        body = ev.make_event(SERVICE_NAME, ev.NOTIFICATION_SENT, now=self.clock(), trace_id=event.trace_id,
                             event_id=nid, ticket_id=event.ticket_id, notification_id=nid, kind=kind,
                             recipient=recipient)
        try:
            await publish_confirmed(self.publisher, ev.NOTIFICATION_SENT, body)
        except BrokerUnavailable as exc:
            raise TransientError(str(exc)) from exc
        await self.store.mark_announced(nid)


NOTIFIER_KEY = web.AppKey("notifier", Notifier)


def create_service(settings: Settings) -> AioService:
    """The notifier as an AioService: consumers plus a /healthz endpoint for probes."""
    names = display_names(settings.roster_file)

    def build_app(ctx: ServiceContext) -> web.Application:
        if settings.mail_token_secret_is_dev_default:  # here: logging is configured by now
            log.warning("mail_token_secret_is_dev_default",
                        hint="set TM_MAIL_TOKEN_SECRET: anyone can forge ticket tokens with the default")
        notifier = Notifier(
            store=NotificationStore(ctx.redis),
            mailer=SmtpMailer(settings.smtp_host, settings.smtp_port, settings.smtp_user, settings.smtp_password,
                              settings.smtp_starttls, settings.smtp_timeout),
            publisher=ctx.publisher,
            sender=messages.Sender(settings.mail_from, settings.mail_from_name, settings.mail_token_secret),
            supervisor_email=settings.supervisor_email,
            supervisor_locale=settings.supervisor_language,
            zone=settings.mail_timezone,
            agent_names=names,
        )
        notifier.subscribe(ctx.consumer)
        app = ctx.new_app()
        app[NOTIFIER_KEY] = notifier
        return app

    return AioService(SERVICE_NAME, settings.common, build_app, host=settings.host, port=settings.port)
