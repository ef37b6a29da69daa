"""The delivery loop: take due mail from the outbox, hand it to the relay, record what happened.

The event consumers only *queue* mail (render once, store, ack the event); ``TM_NOTIFIER_SENDERS``
senders per notifier deliver it, each on its own reused SMTP connection. So a relay answering
4xx, or not answering, holds up no consumer queue: the mail waits in the outbox's schedule and
everything else goes on.

Per mail (one claim = one SMTP attempt):

- **accepted** (250 to DATA): ``sent``; then ``notification_sent`` (event id = notification id)
  is published, confirmed, and the outbox entry is done (kept 30 days without its body, so the
  triggering event redelivered sends nothing).
- **deferred** (no answer, or 4xx): tried again after exponential backoff with full jitter
  (:mod:`delivery_policy`); after ``TM_NOTIFIER_MAX_ATTEMPTS`` attempts it becomes a dead letter
  (``dead``) and ``notification_failed`` (permanent: false) is published.
- **refused** (5xx): no retry. A 5xx to RCPT about the mailbox also suppresses the address like
  a hard bounce (60 days); either way the mail becomes a dead letter (``failed``) and
  ``notification_failed`` (permanent: true) is published. ``ticketmesh notifications replay``
  sends dead letters again from attempt 1 (and lifts a suppression our relay's refusal caused).
- The address was suppressed since the mail was queued (a bounce came back meanwhile): no
  attempt; ``failed``, reason ``bounced_address``.

**What kill -9 can and cannot do.** The outbox records ``sending`` right before DATA and
``sent`` as soon as the relay answers 250; a sender holds a mail under a lease
(``TM_NOTIFIER_LEASE_SECONDS``), and a notifier that dies loses it when the lease runs out, to
whichever notifier claims it next. A mail is never dropped: whatever state the dead notifier
left (``queued``, ``sending``, ``sent`` not yet announced), the next claim carries it forward.
It is delivered exactly once wherever the process dies, except in one window: after the relay
committed the message (its 250 to the end of DATA) and before ``sent`` reached Redis (one
network round trip and one Redis write, well under a millisecond on a LAN; longer only if Redis
is unreachable right then, and the sender keeps trying for half the lease). The same holds when
the relay's 250 never arrives (a timeout waiting for it). SMTP gives no way to ask the relay
whether it has the message, so a claim that finds ``sending`` sends again (logged
``notification_outcome_unknown``): in that window the customer gets a second copy,
byte-identical (same Message-ID and Date), which mail clients that dedupe by Message-ID (Gmail
among them) show once. Everywhere else (before MAIL, after RCPT, with the message half-written,
after ``sent`` was recorded) a kill costs nothing but the lease's wait.
``services/notifier/tests/service/test_kill_recovery.py`` kills a real notifier at each point.

Ordering: mails go out in the order they became due, across senders in parallel; two mails to
one customer may overtake each other (e.g. when the first was deferred).
"""
from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Callable

import redis.exceptions

from services.notifier import delivery_policy, outbox as ob
from services.notifier.config import DeliverySettings
from services.notifier.delivery_policy import SmtpFailure
from services.notifier.loop_safety import BOUNCED_ADDRESS
from services.notifier.mailer import LeaseLost, SmtpConfig, SmtpSession
from services.notifier.store import NotificationStore
from shared import events as ev
from shared.aio_service import BrokerUnavailable, publish_confirmed
from shared.amqp import EventPublisher
from shared.intake_ledger import stable_event_id
from shared.logging import bound_event_context, get_logger, mask, mask_email

log = get_logger(__name__)

POLL_SECONDS = 1.0            # how soon another replica's new mail, or an expired lease, is noticed
ANNOUNCE_RETRY_SECONDS = 5.0  # broker away (it already had 5 s to confirm): announce again after this
STORE_RETRY_SECONDS = 1.0     # Redis away: the loop waits this long before looking again
STOP_DRAIN_SECONDS = 15.0


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class DeliveryWorker:
    outbox: ob.Outbox
    store: NotificationStore
    smtp: SmtpConfig
    publisher: EventPublisher
    settings: DeliverySettings = field(default_factory=DeliverySettings)
    service: str = ev.NOTIFIER
    clock: Callable[[], datetime] = _utcnow
    random: Callable[[], float] = random.random
    poll_seconds: float = POLL_SECONDS
    _tasks: list[asyncio.Task] = field(default_factory=list)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: bool = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping = False
        self._tasks = [asyncio.create_task(self._sender(), name=f"notifier-sender-{n}")
                       for n in range(self.settings.senders)]
        log.info("delivery_started", senders=self.settings.senders, tls=self.smtp.tls,
                 auth=bool(self.smtp.username))

    def wake(self) -> None:
        """New mail is due now (queued by this process): look without waiting for the poll."""
        self._wake.set()

    async def stop(self, drain_seconds: float = STOP_DRAIN_SECONDS) -> None:
        """Finish the attempts under way (bounded), then stop; what is left stays due."""
        self._stopping = True
        self._wake.set()
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=drain_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._tasks = []
        log.info("delivery_stopped")

    # -- the loop ----------------------------------------------------------------------------

    async def _sender(self) -> None:
        session = SmtpSession(self.smtp)
        try:
            while not self._stopping:
                self._wake.clear()
                token = uuid.uuid4().hex
                try:
                    record = await self.outbox.claim(self._now(), self.settings.lease_seconds, token)
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                    log.warning("outbox_unavailable", error=repr(exc))
                    await self._pause(STORE_RETRY_SECONDS)
                    continue
                if record is None:
                    await self._pause(await self._idle_wait())
                    continue
                try:
                    with bound_event_context(trace_id=record.trace_id, ticket_id=record.ticket_id,
                                             notification_id=record.notification_id):
                        await self._process(record, token, session)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - one mail's trouble must not stop the sender
                    # The lease runs out and the mail is claimed again (each claim counts as an
                    # attempt, so a mail that keeps failing like this ends in the dead letters).
                    log.exception("delivery_failed_unexpectedly", notification_id=record.notification_id)
                    await session.close()  # whatever state the SMTP conversation was left in
                    await self._pause(STORE_RETRY_SECONDS)
        finally:
            await session.close()

    async def _idle_wait(self) -> float:
        try:
            next_due = await self.outbox.next_due()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            return STORE_RETRY_SECONDS
        if next_due is None:
            return self.poll_seconds
        return min(self.poll_seconds, max(0.01, next_due - self._now()))

    async def _pause(self, seconds: float) -> None:
        if self._stopping:
            return
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def _now(self) -> float:
        return self.clock().timestamp()

    # -- one mail ----------------------------------------------------------------------------

    async def _process(self, record: ob.Record, token: str, session: SmtpSession) -> None:
        if record.state in ob.FINAL:
            await self._announce(record, token)
            return
        recipient = mask(record.recipient)
        if record.outcome_unknown:
            log.warning("notification_outcome_unknown", kind=record.kind, recipient=recipient,
                        attempt=record.attempts, hint="the sender holding it died or stalled during DATA; "
                        "sending it again (same Message-ID): the recipient may get two copies")
        if record.attempts > self.settings.max_attempts:
            # Claimed again and again without an answer (e.g. a notifier dying on this mail).
            await self._give_up(record, token, ob.DEAD, record.last_error or "attempts spent", permanent=False)
            return
        if await self.store.is_bounced(record.recipient):
            log.info("notification_skipped", kind=record.kind, reason=BOUNCED_ADDRESS, recipient=recipient)
            await self._give_up(record, token, ob.FAILED, BOUNCED_ADDRESS, permanent=True)
            return
        if record.raw is None:
            await self._give_up(record, token, ob.DEAD, "the outbox entry has no message body", permanent=False)
            return

        async def before_data() -> bool:
            return await self.outbox.mark_sending(record.notification_id, token, self._now(),
                                                  self.settings.lease_seconds)

        try:
            reply = await session.send(record.sender, record.recipient, record.raw, utf8=record.utf8,
                                       before_data=before_data)
        except LeaseLost:
            log.info("notification_lease_lost", kind=record.kind, attempt=record.attempts)
            return
        except SmtpFailure as failure:
            await self._failed_attempt(record, token, failure)
            return
        # Shielded: a stop() that cancels us now must not lose the fact that the relay has it.
        await asyncio.shield(self._record_sent(record.notification_id))
        log.info("notification_sent", kind=record.kind, notification_id=record.notification_id,
                 recipient=recipient, attempt=record.attempts, smtp_reply=mask_email(reply)[:200])
        await self._announce(_with_state(record, ob.SENT), token)

    async def _record_sent(self, notification_id: str) -> None:
        """Keep trying while the lease lasts: until ``sent`` is in Redis, a notifier that takes the
        mail over after the lease would send it again."""
        deadline = asyncio.get_running_loop().time() + self.settings.lease_seconds / 2
        while True:
            try:
                await self.outbox.mark_sent(notification_id, self._now())
                return
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                log.warning("outbox_unavailable", while_recording="sent", error=repr(exc))
                await asyncio.sleep(STORE_RETRY_SECONDS)

    async def _failed_attempt(self, record: ob.Record, token: str, failure: SmtpFailure) -> None:
        verdict = delivery_policy.verdict(failure)
        reason = mask_email(str(failure))  # relays quote the address; digits are not phones here
        recipient = mask(record.recipient)
        if verdict == delivery_policy.REFUSED_ADDRESS:
            await self.store.mark_refused(record.recipient)
            log.warning("address_refused", recipient=recipient, smtp_code=failure.code,
                        smtp_reply=mask_email(failure.reply))
        if verdict != delivery_policy.RETRY:
            log.warning("notification_rejected", kind=record.kind, recipient=recipient, stage=failure.stage,
                        smtp_code=failure.code, smtp_reply=mask_email(failure.reply), address_suppressed=
                        verdict == delivery_policy.REFUSED_ADDRESS)
            await self._give_up(record, token, ob.FAILED, reason, permanent=True)
            return
        if failure.maybe_delivered:
            log.warning("notification_outcome_unknown", kind=record.kind, recipient=recipient, stage=failure.stage,
                        error=reason, hint="no answer to DATA: the relay may have the mail; retrying it (same "
                        "Message-ID) may deliver a second copy")
        if record.attempts >= self.settings.max_attempts:
            await self._give_up(record, token, ob.DEAD, reason, permanent=False)
            return
        delay = delivery_policy.retry_delay(record.attempts, base=self.settings.retry_base_seconds,
                                            cap=self.settings.retry_cap_seconds, random=self.random)
        await self.outbox.reschedule(record.notification_id, token, self._now() + delay, error=reason)
        log.info("notification_deferred", kind=record.kind, recipient=recipient, attempt=record.attempts,
                 retry_in=round(delay, 2), stage=failure.stage, smtp_code=failure.code, error=reason)

    async def _give_up(self, record: ob.Record, token: str, state: str, reason: str, *, permanent: bool) -> None:
        if not await self.outbox.give_up(record.notification_id, token, state, reason, self._now()):
            return  # another sender holds it now
        log.warning("notification_dead_lettered", kind=record.kind, recipient=mask(record.recipient), state=state,
                    attempts=record.attempts, permanent=permanent, reason=reason)
        await self._announce(_with_state(record, state, reason=reason, failures=record.failures + 1), token)

    async def _announce(self, record: ob.Record, token: str) -> None:
        """Publish the outcome once (confirmed), then close the outbox entry."""
        if record.announced:
            await self.outbox.mark_announced(record.notification_id, record.state)
            return
        if record.ticket_id is not None:  # both events are about a ticket; a mail about none is only recorded
            body = self._outcome_event(record)
            try:
                await publish_confirmed(self.publisher, body[0], body[1])
            except BrokerUnavailable as exc:
                log.warning("notification_announce_deferred", event=body[0], error=str(exc),
                            retry_in=ANNOUNCE_RETRY_SECONDS)
                await self.outbox.reschedule(record.notification_id, token, self._now() + ANNOUNCE_RETRY_SECONDS,
                                             state=record.state, error=f"announce: {exc}")
                return
        await self.outbox.mark_announced(record.notification_id, record.state)

    def _outcome_event(self, record: ob.Record) -> tuple[str, dict]:
        now, recipient = self.clock(), mask(record.recipient)
        if record.state == ob.SENT:
            return ev.NOTIFICATION_SENT, ev.make_event(
                self.service, ev.NOTIFICATION_SENT, now=now, trace_id=record.trace_id or record.notification_id,
                event_id=record.notification_id, ticket_id=record.ticket_id, notification_id=record.notification_id,
                kind=record.kind, recipient=recipient)
        return ev.NOTIFICATION_FAILED, ev.make_event(
            self.service, ev.NOTIFICATION_FAILED, now=now, trace_id=record.trace_id or record.notification_id,
            # One event per failure: a replayed mail that fails again is news again.
            event_id=stable_event_id("notification_failed", record.notification_id, str(record.failures)),
            ticket_id=record.ticket_id, notification_id=record.notification_id, kind=record.kind,
            recipient=recipient, reason=record.reason or "failed", permanent=record.state == ob.FAILED,
            attempts=max(1, record.attempts))


def _with_state(record: ob.Record, state: str, **changes: object) -> ob.Record:
    return replace(record, state=state, announced=False, **changes)  # type: ignore[arg-type]
