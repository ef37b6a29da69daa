"""Signed ticket tokens in the mail we send, so a reply finds its ticket and a forgery does not.

The notifier writes them; intake_email reads them. Both share ``TM_MAIL_TOKEN_SECRET``.

- Message-ID: ``<tm.TM-10001.<notification>.<sig>@<our domain>>``. A customer's reply carries
  it in In-Reply-To/References; its signature proves we sent it for *that* ticket, so a
  made-up id cannot attach mail to somebody else's ticket.
- Reply-To: ``support+TM-10001.<sig>@<our domain>`` (a plus address). Mail clients that drop
  the threading headers still send to it.
- Subject tag: ``[#TM-10001]``. Unsigned: a person can type it, so the intake trusts it only
  when the sender already takes part in that ticket.

``sig`` is the first 12 characters of the lowercase base32 HMAC-SHA256 of the ticket id: 60
bits, lowercase because MTAs and clients sometimes lowercase local parts and ids. Pure: no I/O.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Mapping

from shared.config import ConfigError, Variable

SECRET_VARIABLE = "TM_MAIL_TOKEN_SECRET"
DEV_SECRET = "dev-only-mail-token-secret-change-me"
MIN_SECRET_CHARS = 16
VARIABLES = (
    Variable(SECRET_VARIABLE, None, "key that signs ticket tokens in our mail's Message-ID and Reply-To (same "
             "value for notifier and intake_email; required in production, a dev default logs a warning)"),
)
SIG_CHARS = 12

_TICKET = r"TM-\d{1,18}"
_SIG = rf"[a-z2-7]{{{SIG_CHARS}}}"
_MESSAGE_ID = re.compile(rf"^<?\s*tm\.({_TICKET})\.[A-Za-z0-9_-]{{1,64}}\.({_SIG})@[^<>\s@]+\s*>?$", re.IGNORECASE)
_PLUS_ADDRESS = re.compile(rf"^[^@+\s]+\+({_TICKET})\.({_SIG})@[^@\s]+$", re.IGNORECASE)
_SUBJECT_TAG = re.compile(rf"\[#({_TICKET})\]", re.IGNORECASE)


def secret_from_env(environ: Mapping[str, str]) -> tuple[bytes, bool]:
    """``(secret, is_dev_default)`` from the caller's settings (its config module passes them in;
    this module reads no environment); a configured secret shorter than 16 characters is refused."""
    raw = environ.get(SECRET_VARIABLE, "")
    if not raw:
        return DEV_SECRET.encode(), True
    if len(raw) < MIN_SECRET_CHARS:
        raise ConfigError(f"{SECRET_VARIABLE} must be at least {MIN_SECRET_CHARS} characters")
    return raw.encode(), False


def signature(secret: bytes, ticket_id: str) -> str:
    digest = hmac.new(secret, f"ticketmesh-mail:{ticket_id.upper()}".encode(), hashlib.sha256).digest()
    return base64.b32encode(digest).decode().lower()[:SIG_CHARS]


def _verified(secret: bytes, ticket_id: str, sig: str) -> str | None:
    ticket_id = ticket_id.upper()
    return ticket_id if hmac.compare_digest(signature(secret, ticket_id), sig.lower()) else None


def message_id(secret: bytes, ticket_id: str, notification: str, domain: str) -> str:
    """Our Message-ID for one mail about ``ticket_id`` (with angle brackets)."""
    return f"<tm.{ticket_id}.{notification}.{signature(secret, ticket_id)}@{domain}>"


def reply_address(secret: bytes, ticket_id: str, address: str) -> str:
    """``support@x`` → ``support+TM-10001.<sig>@x``: replies to it name the ticket."""
    local, domain = address.rsplit("@", 1)
    return f"{local.split('+', 1)[0]}+{ticket_id}.{signature(secret, ticket_id)}@{domain}"


def ticket_from_message_id(secret: bytes, value: str) -> str | None:
    """The ticket a Message-ID of ours names, if its signature holds; None for any other id."""
    found = _MESSAGE_ID.match(value.strip())
    return _verified(secret, found.group(1), found.group(2)) if found else None


def ticket_from_address(secret: bytes, address: str) -> str | None:
    """The ticket a plus address of ours names, if its signature holds."""
    found = _PLUS_ADDRESS.match(address.strip())
    return _verified(secret, found.group(1), found.group(2)) if found else None


def ticket_from_subject(subject: str) -> str | None:
    """The ``[#TM-n]`` tag in a subject (unsigned: check who sent it before trusting it)."""
    found = _SUBJECT_TAG.search(subject)
    return found.group(1).upper() if found else None
