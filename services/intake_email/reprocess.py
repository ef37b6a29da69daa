"""``ticketmesh quarantine reprocess``: give a quarantined message a second chance through the normal path.

The kept raw bytes are APPENDed, unflagged, to the folder the mailbox watches, so the running
service ingests them like any new mail (checkpoint, dedupe, events, flags: nothing special).
Before that, a one-shot release marker keyed by the bytes' sha256 is set in Redis, so that
intake skips the automatic and flood checks that put the message aside (ops decided it is a
person's mail). The marker goes first: the service may fetch the message the moment it lands.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from services.intake_email.config import MailboxSettings
from services.intake_email.imap import login
from services.intake_email.quarantine import Entry, Quarantine
from services.intake_email.store import IntakeEmailStore

_APPENDUID = re.compile(rb"APPENDUID \d+ (\d+)")


class CannotReprocess(ValueError):
    """This entry cannot go back to the mailbox (the message says why)."""


@dataclass(frozen=True)
class Reprocessed:
    id: str
    mailbox: str
    folder: str
    uid: int | None  # the new UID when the server reports it (UIDPLUS)


def reprocess(entry: Entry, mailbox: MailboxSettings | None, store: IntakeEmailStore,
              quarantine: Quarantine) -> Reprocessed:
    if entry.header_only:
        raise CannotReprocess(f"{entry.id}: only its headers were kept (it was over the size limit of its "
                              "mailbox); ask the sender to send it again smaller, or fetch it from the server")
    if mailbox is None:
        raise CannotReprocess(f"{entry.id}: mailbox {entry.mailbox!r} is not in the configuration "
                              "(TM_EMAIL_MAILBOXES_FILE / TM_IMAP_*)")
    raw = entry.raw()
    store.release(hashlib.sha256(raw).hexdigest())
    client = login(mailbox)
    try:
        response = client.append(mailbox.folder, raw, flags=())
    finally:
        try:
            client.logout()
        except Exception:  # noqa: BLE001 - the APPEND is what matters
            client.shutdown()
    quarantine.mark_reprocessed(entry)
    found = _APPENDUID.search(response if isinstance(response, bytes) else str(response).encode())
    return Reprocessed(entry.id, mailbox.name, mailbox.folder, int(found.group(1)) if found else None)
