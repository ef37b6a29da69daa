"""intake_email: every new message of the watched mailbox becomes exactly one ticket event.

The :mod:`~services.intake_email.watcher` entrypoint hands each fetched message to
``handle_mail``; when it returns, the message is flagged ``\\Seen`` and the checkpoint advances.
``handle_mail`` normalizes the mail and decides, by the message's identity (see
:mod:`~services.intake_email.intake`):

- already ticketed and published → nothing (a duplicate delivery or a re-fetch);
- already ticketed, publish unconfirmed (we crashed in between) → publish again, same event_id;
- it answers a message we know (In-Reply-To / References) → ``message_received`` on that ticket;
- otherwise → a new ticket number and ``ticket_received``.

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
from services.intake_email import intake
from services.intake_email.config import DATA_DIR_CONFIG_KEY
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


class QuarantineProvider(DependencyProvider):
    def setup(self) -> None:
        self.quarantine = Quarantine(Path(self.container.config.get(DATA_DIR_CONFIG_KEY, "var")) / "quarantine")

    def get_dependency(self, worker_ctx: Any) -> Quarantine:
        return self.quarantine


class IntakeEmailService:
    name = ev.INTAKE_EMAIL

    emit = Emitter()
    store: IntakeEmailStore = StoreProvider(IntakeEmailStore)
    quarantine: Quarantine = QuarantineProvider()
    log_context = LogContext()

    @watch_mailbox
    def handle_mail(self, fetched: FetchedMail) -> str:
        with bound_event_context(mailbox=fetched.mailbox, uid=fetched.uid):
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
        for message_id in mail.thread_candidates[:MAX_THREAD_LOOKUPS]:
            ticket_id = self.store.ticket_of_message(intake.KIND_MESSAGE_ID, intake.message_id_key(message_id))
            if ticket_id:
                return ticket_id
        return None

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

    def _quarantine(self, fetched: FetchedMail, reason: str) -> str:
        path = self.quarantine.put(fetched, reason, now=datetime.now(timezone.utc))
        log.warning("mail_quarantined", reason=reason, path=str(path))
        return QUARANTINED
