"""intake_email: every new message of the watched mailbox becomes exactly one ticket event.

The :mod:`~services.intake_email.watcher` entrypoint hands each fetched message to
``handle_mail``; when it returns, the message is flagged ``\\Seen`` and the checkpoint advances.
``handle_mail`` normalizes the mail and decides, by the message's identity (see
:mod:`~services.intake_email.intake`):

- already ticketed and published → nothing (a duplicate delivery or a re-fetch);
- already ticketed, publish unconfirmed (we crashed in between) → publish again, same event_id;
- it answers a message we know (In-Reply-To / References) → ``message_received`` on that ticket;
- otherwise → a new ticket number and ``ticket_received``.

Mail from a machine — an out-of-office reply, a bounce, our own acknowledgement coming back
(see :mod:`~services.intake_email.automatic`) — opens nothing and publishes nothing, or our
acknowledgements and a careless autoresponder would answer each other forever. It is kept in
quarantine under ``automatic:<kind>:<signal>`` (nothing lost; ops can look), logged as
``mail_ignored_automatic`` and counts as handled, so the mailbox moves on.

Unparseable mail is quarantined with its reason and counts as handled. So is mail from a
sender over the flood limit (:mod:`~services.intake_email.flood`, logged
``mail_flood_throttled``), and mail over its mailbox's size limit (headers only), whose sender is
told with ``mail_rejected`` when the mailbox has ``reject_oversize``
(:mod:`~services.intake_email.rejection`). A message ops reprocessed from quarantine
(``ticketmesh quarantine reprocess``) skips the automatic and flood checks once.

``/healthz`` answers while the container runs; ``/readyz`` checks Redis, RabbitMQ and that every
configured mailbox is watched by some replica and not stalled (:mod:`~services.intake_email.health`).
"""
from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import kombu
from nameko.extensions import DependencyProvider
from nameko.web.handlers import http

from shared import events as ev
from shared.logging import bound_event_context, get_logger
from shared.nameko_ext import Emitter, LogContext, StoreProvider
from services.intake_email import automatic, flood, health, intake, rejection
from services.intake_email.config import (DATA_DIR_CONFIG_KEY, DEFAULT_MAIL_FROM, FLOOD_MAX_CONFIG_KEY,
                                          FLOOD_WINDOW_CONFIG_KEY, MAIL_FROM_CONFIG_KEY, MAILBOXES_CONFIG_KEY,
                                          STALL_CONFIG_KEY, WEB_SERVER_CONFIG_KEY, MailboxSettings)
from services.intake_email.imap import FetchedMail
from services.intake_email.normalize import MailRejected, NormalizedMail, normalize
from services.intake_email.quarantine import Quarantine
from services.intake_email.store import IntakeEmailStore
from services.intake_email.watcher import watch_mailbox

log = get_logger(__name__)

MAX_THREAD_LOOKUPS = 20  # References can list a whole thread; the nearest ids are enough

TICKETED = "ticketed"
FOLLOWED_UP = "followed_up"
DUPLICATE = "duplicate"
QUARANTINED = "quarantined"
IGNORED_AUTOMATIC = "ignored_automatic"
THROTTLED = "throttled"
RABBITMQ_CHECK_TIMEOUT_SECONDS = 2.0


class QuarantineProvider(DependencyProvider):
    def setup(self) -> None:
        self.quarantine = Quarantine(Path(self.container.config.get(DATA_DIR_CONFIG_KEY, "var")) / "quarantine")

    def get_dependency(self, worker_ctx: Any) -> Quarantine:
        return self.quarantine


class OurAddressProvider(DependencyProvider):
    """Our support address (``TM_MAIL_FROM``): mail From it is our own mail looping back."""

    def setup(self) -> None:
        self.address = str(self.container.config.get(MAIL_FROM_CONFIG_KEY) or DEFAULT_MAIL_FROM).strip().lower()

    def get_dependency(self, worker_ctx: Any) -> str:
        return self.address


class IntakePolicy(DependencyProvider):
    """The mailboxes' settings, the flood policy, and the one-shot quarantine releases.

    A release (``ticketmesh quarantine reprocess``) is cleared only when the worker that used it
    succeeded, so a transient failure does not spend it.
    """

    def setup(self) -> None:
        config = self.container.config
        # /healthz and /readyz: without an address (embedded, tests) a free loopback port, never
        # nameko's default 0.0.0.0:8000 that two containers on one host would fight over. Every
        # extension's setup runs before any starts, so the web server binds after this.
        config.setdefault(WEB_SERVER_CONFIG_KEY, "127.0.0.1:0")
        self.mailboxes = {raw["name"]: MailboxSettings.from_config(raw) for raw in config.get(MAILBOXES_CONFIG_KEY, [])}
        self.flood = flood.FloodPolicy.from_minutes(config.get(FLOOD_MAX_CONFIG_KEY, 20),
                                                    config.get(FLOOD_WINDOW_CONFIG_KEY, 10))
        self.stall_seconds = float(config.get(STALL_CONFIG_KEY, 120))
        self.amqp_uri = config["AMQP_URI"]

    def get_dependency(self, worker_ctx: Any) -> "_WorkerPolicy":
        return _WorkerPolicy(self, worker_ctx.data)

    def worker_result(self, worker_ctx: Any, result: Any = None, exc_info: Any = None) -> None:
        release = worker_ctx.data.pop("_tm_release", None)
        if release is not None and exc_info is None:
            store, digest = release
            store.clear_release(digest)


class _WorkerPolicy:
    def __init__(self, provider: IntakePolicy, worker_data: dict):
        self.mailboxes = provider.mailboxes
        self.flood = provider.flood
        self.stall_seconds = provider.stall_seconds
        self.amqp_uri = provider.amqp_uri
        self._worker_data = worker_data

    def released(self, store: IntakeEmailStore, fetched: FetchedMail) -> bool:
        """Did ops reprocess exactly these bytes from quarantine (skip the checks, this once)?"""
        digest = hashlib.sha256(fetched.raw).hexdigest()
        if not store.is_released(digest):
            return False
        self._worker_data["_tm_release"] = (store, digest)
        return True


class IntakeEmailService:
    name = ev.INTAKE_EMAIL

    emit = Emitter()
    store: IntakeEmailStore = StoreProvider(IntakeEmailStore)
    quarantine: Quarantine = QuarantineProvider()
    our_address: str = OurAddressProvider()
    policy: Any = IntakePolicy()
    log_context = LogContext()

    @watch_mailbox
    def handle_mail(self, fetched: FetchedMail) -> str:
        with bound_event_context(mailbox=fetched.mailbox, uid=fetched.uid):
            # Before anything else: a machine's mail must not even be judged as a ticket (a bounce
            # often has no usable sender), and over-size mail still has its headers to judge by.
            parsed = automatic.parse(fetched.raw)
            checks = not self.policy.released(self.store, fetched)
            if not checks:
                log.info("mail_released_from_quarantine")
            machine = automatic.classify(parsed, our_address=self.our_address) if parsed and checks else None
            if machine is not None:
                return self._ignore_automatic(fetched, machine)
            throttled = self._flood_reason(fetched, parsed) if parsed and checks else None
            if throttled:
                log.warning("mail_flood_throttled", from_email=rejection.sender(parsed)[1], reason=throttled)
                return self._quarantine(fetched, throttled, as_outcome=THROTTLED)
            if fetched.header_only:
                return self._too_large(fetched, parsed)
            try:
                # The size limit was applied at fetch time from RFC822.SIZE.
                mail = normalize(fetched.raw, received_at=fetched.internal_date, max_bytes=len(fetched.raw))
            except MailRejected as rejected:
                return self._quarantine(fetched, rejected.reason)
            key = intake.contact_key(mail, fetched)
            opened = self.store.ticket_opened_by(key.kind, key.key)
            if opened:
                return self._open_ticket(mail, fetched, opened)
            replied = self.store.ticket_replied_by(key.kind, key.key)
            if replied:
                return self._follow_up(mail, key, replied)
            parent = self._ticket_answered_by(mail)
            if parent:
                return self._follow_up(mail, key, self.store.claim_reply(key.kind, key.key, parent))
            ticket_id, _new = self.store.claim_ticket(key.kind, key.key)
            return self._open_ticket(mail, fetched, ticket_id)

    def _flood_reason(self, fetched: FetchedMail, parsed: Any) -> str | None:
        address = rejection.sender(parsed)[1]
        if not address:
            return None
        member = flood.message_member(str(parsed.get("Message-ID", "") or ""), fetched.mailbox,
                                      fetched.uidvalidity, fetched.uid)
        count = self.store.record_sender_message(flood.sender_hash(address), member, now=time.time(),
                                                 window_seconds=self.policy.flood.window_seconds)
        return flood.throttle_reason(self.policy.flood, count)

    def _too_large(self, fetched: FetchedMail, parsed: Any) -> str:
        mailbox = self.policy.mailboxes.get(fetched.mailbox)
        limit = mailbox.max_message_bytes if mailbox else 0
        outcome = self._quarantine(fetched, f"message is {fetched.size} bytes, over the mailbox's size limit"
                                   + (f" of {limit}" if limit else ""))
        if not (mailbox and mailbox.reject_oversize and parsed):
            return outcome
        fields = rejection.too_large_fields(parsed, mailbox=fetched.mailbox, uidvalidity=fetched.uidvalidity,
                                            uid=fetched.uid, size=fetched.size, limit=limit,
                                            received_at=fetched.internal_date)
        if fields is None:
            log.info("mail_rejection_not_sent", reason="system or no-reply sender")
        elif not self.store.is_rejection_published(fetched.mailbox, fetched.uidvalidity, fetched.uid):
            _event_id, trace_id = rejection.event_ids(fetched.mailbox, fetched.uidvalidity, fetched.uid)
            self.emit(ev.MAIL_REJECTED, now=datetime.now(timezone.utc), trace_id=trace_id, **fields)
            self.store.mark_rejection_published(fetched.mailbox, fetched.uidvalidity, fetched.uid)
            log.info("mail_rejected", to=fields["to"], reason=fields["reason"], size=fetched.size, limit=limit)
        return outcome

    # -- health --------------------------------------------------------------------------------

    @http("GET", "/healthz")
    def healthz(self, request: Any) -> tuple[int, dict, str]:
        return 200, {"Content-Type": "application/json"}, json.dumps({"alive": True})

    @http("GET", "/readyz")
    def readyz(self, request: Any) -> tuple[int, dict, str]:
        names = sorted(self.policy.mailboxes)
        try:
            self.store.ping()
            states = self.store.mailbox_states(names)
            redis_ok = True
        except Exception:  # noqa: BLE001 - unreachable is the answer, not an error
            states, redis_ok = [({}, None) for _ in names], False
        now = time.time()
        judged = [health.judge_mailbox(name, record, holder, now=now, stall_seconds=self.policy.stall_seconds)
                  for name, (record, holder) in zip(names, states)]
        status, body = health.readiness(redis_ok=redis_ok, rabbitmq_ok=self._rabbitmq_reachable(),
                                        mailboxes=judged, now=now)
        return status, {"Content-Type": "application/json"}, json.dumps(body)

    def _rabbitmq_reachable(self) -> bool:
        try:
            with kombu.Connection(self.policy.amqp_uri, connect_timeout=RABBITMQ_CHECK_TIMEOUT_SECONDS) as conn:
                conn.connect()
            return True
        except Exception:  # noqa: BLE001
            return False

    def _ticket_answered_by(self, mail: NormalizedMail) -> str | None:
        keys = [intake.message_id_key(m) for m in mail.thread_candidates[:MAX_THREAD_LOOKUPS]]
        return self.store.first_ticket_of_messages(intake.KIND_MESSAGE_ID, keys)

    def _open_ticket(self, mail: NormalizedMail, fetched: FetchedMail, ticket_id: str) -> str:
        trace_id = intake.trace_id_for(ticket_id)
        with bound_event_context(ticket_id=ticket_id, trace_id=trace_id):
            if self.store.is_ticket_published(ticket_id):
                log.info("mail_duplicate", of="ticket_received")
                return DUPLICATE
            self.emit(ev.TICKET_RECEIVED, now=datetime.now(timezone.utc), trace_id=trace_id,
                      **intake.ticket_received_fields(mail, fetched, ticket_id))
            self.store.mark_ticket_published(ticket_id)
            log.info("mail_ticketed", from_email=mail.from_email, language=mail.language,
                     attachments=len(mail.attachments))
            return TICKETED

    def _follow_up(self, mail: NormalizedMail, key: intake.ContactKey, ticket_id: str) -> str:
        trace_id = intake.trace_id_for(ticket_id)
        with bound_event_context(ticket_id=ticket_id, trace_id=trace_id):
            if self.store.is_reply_published(key.kind, key.key):
                log.info("mail_duplicate", of="message_received")
                return DUPLICATE
            self.emit(ev.MESSAGE_RECEIVED, now=datetime.now(timezone.utc), trace_id=trace_id,
                      **intake.message_received_fields(mail, key, ticket_id))
            self.store.mark_reply_published(key.kind, key.key)
            log.info("mail_followed_up", from_email=mail.from_email)
            return FOLLOWED_UP

    def _ignore_automatic(self, fetched: FetchedMail, machine: automatic.Automatic) -> str:
        path = self.quarantine.put(fetched, machine.label, now=datetime.now(timezone.utc))
        log.info("mail_ignored_automatic", kind=machine.kind, reason=machine.reason, from_email=machine.sender,
                 path=str(path))
        return IGNORED_AUTOMATIC

    def _quarantine(self, fetched: FetchedMail, reason: str, as_outcome: str = QUARANTINED) -> str:
        path = self.quarantine.put(fetched, reason, now=datetime.now(timezone.utc))
        log.warning("mail_quarantined", reason=reason, path=str(path))
        return as_outcome
