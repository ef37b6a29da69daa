"""Telling a sender their mail was refused (too large). Pure: headers in, event fields out.

Only people are told: mail from a machine never gets here (``automatic`` ran first), and a
sender that is a system or no-reply address (``noreply@``, ``mailer-daemon@``, ``bounces+…@``;
shared/mail_addresses.py, the notifier's rules too) would only bounce our notice back or nobody
would read it. The event id is stable per message
in its mailbox, so a re-fetch republishes the same event and the notifier sends one notice.
"""
from __future__ import annotations

import email.utils
from datetime import datetime
from email.message import Message
from typing import Any

from shared.intake_ledger import stable_event_id
from shared.mail_addresses import is_system_address, is_valid_address
from services.intake_email.normalize import decode_header_value

REASON_TOO_LARGE = "too_large"
_FIELD_LIMITS = {"name": 200, "subject": 1000, "original_message_id": 998}


def sender(msg: Message) -> tuple[str, str]:
    """``(display name, lowercased address)`` of From; ``("", "")`` when absent."""
    name, address = email.utils.parseaddr(decode_header_value(str(msg.get("From", "") or "")))
    return name.strip(), address.strip().lower()


def event_ids(mailbox: str, uidvalidity: int, uid: int) -> tuple[str, str]:
    """``(event_id, trace_id)`` of the rejection of this message."""
    where = (mailbox, str(uidvalidity), str(uid))
    return stable_event_id("mail_rejected", *where), stable_event_id("trace", "mail_rejected", *where)


def too_large_fields(msg: Message, *, mailbox: str, uidvalidity: int, uid: int, size: int, limit: int,
                     received_at: datetime) -> dict[str, Any] | None:
    """The ``mail_rejected`` fields for an over-size message, or None when nobody should be told."""
    name, address = sender(msg)
    if not is_valid_address(address) or is_system_address(address):
        return None
    event_id, _trace = event_ids(mailbox, uidvalidity, uid)
    message_id = str(msg.get("Message-ID", "") or "").strip().strip("<>") or None
    return dict(
        event_id=event_id,
        to=address,
        name=name[:_FIELD_LIMITS["name"]],
        reason=REASON_TOO_LARGE,
        subject=decode_header_value(str(msg.get("Subject", "") or ""))[:_FIELD_LIMITS["subject"]],
        size=size,
        limit=limit,
        original_message_id=message_id[:_FIELD_LIMITS["original_message_id"]] if message_id else None,
        received_at=received_at,
    )
