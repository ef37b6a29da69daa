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

Unparseable mail is quarantined with its reason and counts as handled.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nameko.extensions import DependencyProvider

from shared import events as ev
from shared.logging import bound_event_context, get_logger
from shared.nameko_ext import Emitter, LogContext, StoreProvider
from services.intake_email import automatic, intake
from services.intake_email.config import DATA_DIR_CONFIG_KEY, DEFAULT_MAIL_FROM, MAIL_FROM_CONFIG_KEY
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


class IntakeEmailService:
    name = ev.INTAKE_EMAIL

    emit = Emitter()
    store: IntakeEmailStore = StoreProvider(IntakeEmailStore)
    quarantine: Quarantine = QuarantineProvider()
    our_address: str = OurAddressProvider()
    log_context = LogContext()

    @watch_mailbox
    def handle_mail(self, fetched: FetchedMail) -> str:
        with bound_event_context(mailbox=fetched.mailbox, uid=fetched.uid):
            # Before anything else: a machine's mail must not even be judged as a ticket (a bounce
            # often has no usable sender), and over-size mail still has its headers to judge by.
            parsed = automatic.parse(fetched.raw)
            machine = automatic.classify(parsed, our_address=self.our_address) if parsed is not None else None
            if machine is not None:
                return self._ignore_automatic(fetched, machine)
            if fetched.header_only:
                return self._quarantine(fetched, f"message is {fetched.size} bytes, over the mailbox's size limit")
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

    def _quarantine(self, fetched: FetchedMail, reason: str) -> str:
        path = self.quarantine.put(fetched, reason, now=datetime.now(timezone.utc))
        log.warning("mail_quarantined", reason=reason, path=str(path))
        return QUARANTINED
