"""The notifier's event handlers: event → mail (messages.py) → outbox (outbox.py) → SMTP (delivery.py).

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
  the sender of a refused inbound mail (never to system or bounced addresses).

Emits ``notification_sent`` (recipient masked) once per mail about a ticket (a rejection names
no ticket, so it is only recorded as sent).

Delivery, per mail: each has a deterministic id (triggering event_id + kind). A handler
renders the mail once and queues it in the outbox (:mod:`outbox`, once per id: a redelivered
event queues nothing), then acks the event; the delivery loop (:mod:`delivery`) sends it,
retries a relay that is away or answers 4xx with backoff, dead-letters it after too many
attempts or a 5xx (``notification_failed``; ``ticketmesh notifications dead|show|replay``) and
publishes ``notification_sent`` once the relay accepted it. Loop safety (:mod:`loop_safety`):
no automatic mail to system, own or suppressed addresses, automatic mail marked as such and
capped per recipient in sliding windows. What a kill -9 can cost is in :mod:`delivery`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from email.message import EmailMessage
from typing import Callable, Mapping

from aiohttp import web

from services.notifier import loop_safety, messages
from services.notifier.config import Settings
from services.notifier.delivery import DeliveryWorker
from services.notifier.mailer import SmtpConfig
from services.notifier.outbox import Letter, Outbox
from services.notifier.store import NotificationStore
from shared import events as ev
from shared.aio_service import AioService, ServiceContext
from shared.amqp import EventConsumer, EventPublisher
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
    outbox: Outbox
    publisher: EventPublisher
    sender: messages.Sender
    supervisor_email: str
    supervisor_locale: str
    zone: tzinfo
    agent_names: Mapping[str, str] = field(default_factory=dict)
    clock: Callable[[], datetime] = _utcnow
    caps: loop_safety.Caps = field(default_factory=loop_safety.Caps)
    delivery: DeliveryWorker | None = None

    def subscribe(self, consumer: EventConsumer) -> None:
        for source, channel in _INTAKES:
            consumer.subscribe(source, ev.TICKET_RECEIVED, f"ack_{channel}_ticket_received", self.ack_ticket_received)
        consumer.subscribe(ev.AGENT_DESK, ev.AGENT_REPLIED, "send_agent_reply", self.send_agent_reply)
        consumer.subscribe(ev.SLA_WATCHER, ev.SLA_BREACHED, "notify_sla_breached", self.notify_sla_breached)
        consumer.subscribe(ev.INTAKE_EMAIL, ev.MAIL_BOUNCED, "record_mail_bounced", self.record_mail_bounced)
        consumer.subscribe(ev.INTAKE_EMAIL, ev.MAIL_REJECTED, "send_mail_rejected", self.send_mail_rejected)

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
        # The thread's newest once queued (what the next reply answers, even if this one is still
        # on its way); a redelivered older reply queues nothing, so it cannot overwrite a later one.
        await self._deliver(reply, kind, nid, mail, thread_reply=True)

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
        recipient's caps; over a cap it is skipped (``notification_skipped``, reason ``loop_cap``).
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
        queued = await self.outbox.enqueue(letter, self.clock().timestamp(), self.caps if automatic else None)
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


def create_service(settings: Settings) -> AioService:
    """The notifier as an AioService: consumers plus a /healthz endpoint for probes."""
    names = display_names(settings.roster_file)

    def build_app(ctx: ServiceContext) -> web.Application:
        if settings.mail_token_secret_is_dev_default:  # here: logging is configured by now
            log.warning("mail_token_secret_is_dev_default",
                        hint="set TM_MAIL_TOKEN_SECRET: anyone can forge ticket tokens with the default")
        store, outbox = NotificationStore(ctx.redis), Outbox(ctx.redis)
        delivery = settings.delivery
        smtp = SmtpConfig(settings.smtp_host, settings.smtp_port, settings.smtp_user, settings.smtp_password,
                          delivery.tls, delivery.ca_file, settings.smtp_timeout)
        if smtp.username and smtp.tls == "plain":
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
            caps=delivery.caps,
            delivery=worker,
        )
        notifier.subscribe(ctx.consumer)
        app = ctx.new_app()
        app[NOTIFIER_KEY] = notifier

        async def start_delivery(_app: web.Application) -> None:
            await worker.start()

        async def stop_delivery(_app: web.Application) -> None:
            # Before the broker and Redis close: attempts under way finish and are recorded.
            await worker.stop()

        app.on_startup.append(start_delivery)
        app.on_cleanup.append(stop_delivery)
        return app

    return AioService(SERVICE_NAME, settings.common, build_app, host=settings.host, port=settings.port)
