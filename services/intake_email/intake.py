"""What one normalized mail becomes: keys, ids and event fields. Pure (no I/O, no clock).

Identity of a message, in the order it is trusted:
- its Message-ID (hashed): kind ``msgid``. The same message delivered twice — two copies in
  a mailbox, the same mail sent to two of our mailboxes, a re-fetch after a crash — has one key;
- without a Message-ID: kind ``nomsgid``, a hash of mailbox + UIDVALIDITY + UID + the Date,
  From and Subject headers as sent. Only the checkpoint and the \\Seen flag protect such mail
  across a UIDVALIDITY change; nothing better is knowable about it.

Ids derived from the ticket number are stable, so a republished event is the same event:
``event_id = stable_event_id("ticket_received", ticket_id)``, and the ticket's trace id is derived
from its number too, so follow-ups carry the trace of the ticket they belong to.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.intake_ledger import natural_key_hash, stable_event_id
from services.intake_email.forwarding import Customer
from services.intake_email.imap import FetchedMail
from services.intake_email.normalize import NormalizedMail

KIND_MESSAGE_ID = "msgid"
KIND_NO_MESSAGE_ID = "nomsgid"
MESSAGE_ID_FIELD_MAX = 128  # MessageReceived.message_id
ATTACHMENTS_MAX = 200  # TicketReceived.attachments


@dataclass(frozen=True)
class ContactKey:
    kind: str
    key: str


def contact_key(mail: NormalizedMail, fetched: FetchedMail) -> ContactKey:
    if mail.message_id:
        return ContactKey(KIND_MESSAGE_ID, message_id_key(mail.message_id))
    parts = [fetched.mailbox, str(fetched.uidvalidity), str(fetched.uid), mail.fingerprint]
    return ContactKey(KIND_NO_MESSAGE_ID, natural_key_hash("\0".join(parts)))


def message_id_key(message_id: str) -> str:
    return natural_key_hash(message_id.strip())


def trace_id_for(ticket_id: str) -> str:
    return stable_event_id("trace", ticket_id)


def customer(mail: NormalizedMail, who: Customer | None = None) -> dict[str, Any]:
    """The event's customer: the sender, or ``who`` (Reply-To, or the original sender of mail an
    agent forwarded; see :mod:`~services.intake_email.forwarding`)."""
    # The address the mail came from is what the channel proves (an agent vouches for a forwarded one).
    if who is None:
        return {"name": mail.from_name, "email": mail.from_email, "language": mail.language,
                "verified": ["email"] if mail.from_email else []}
    return {"name": who.name, "email": who.email, "language": mail.language, "verified": ["email"] if who.email else []}


def attachments(mail: NormalizedMail) -> list[dict[str, Any]]:
    """The event's ``attachments`` (shared.events.Attachment fields) from the mail's parts."""
    return [{"filename": part.filename, "content_type": part.content_type, "size": part.size,
             "content_id": part.content_id, "sha256": part.sha256, "stored": True}
            for part in mail.attachments[:ATTACHMENTS_MAX]]


def ticket_received_fields(mail: NormalizedMail, fetched: FetchedMail, ticket_id: str, *,
                           who: Customer | None = None, linked_ticket_id: str | None = None) -> dict[str, Any]:
    source = {"mailbox": fetched.mailbox, "uid": str(fetched.uid), "uidvalidity": str(fetched.uidvalidity),
              "message_id": mail.message_id or ""}
    if who is not None and who.forwarded_by:
        source["forwarded_by"] = who.forwarded_by
    return dict(
        event_id=stable_event_id("ticket_received", ticket_id),
        ticket_id=ticket_id,
        channel="email",
        customer=customer(mail, who),
        subject=mail.subject,
        text=mail.text,
        received_at=mail.received_at,
        source=source,
        attachments=attachments(mail),
        linked_ticket_id=linked_ticket_id,
    )


def message_received_fields(mail: NormalizedMail, key: ContactKey, ticket_id: str, *,
                            who: Customer | None = None) -> dict[str, Any]:
    return dict(
        event_id=stable_event_id("message_received", key.kind, key.key),
        ticket_id=ticket_id,
        channel="email",
        customer=customer(mail, who),
        # A follow-up quotes the thread the agent already has: the new part is what matters
        # (the whole message stays in the raw mail, source["raw_sha256"]).
        text=mail.reply_text or mail.text,
        message_id=f"email-{key.kind}-{key.key}"[:MESSAGE_ID_FIELD_MAX],
        received_at=mail.received_at,
        attachments=attachments(mail),
    )
