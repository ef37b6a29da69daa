"""What a customer may type on the status and survey pages, checked before anything is written
(pure: no I/O).

Contacts are never stored: a ticket's projection keeps keyed hashes of the customer's email
address and phone number, and a lookup hashes what was typed the same way. Both sides are
normalised first (addresses lowercased; phone numbers to E.164 against a default region, so
``138 1234 5678`` typed in China matches the caller ``+8613812345678``). The hash is an HMAC
under the customer-link secret, so a copy of Redis does not let anyone test guesses offline.
"""
from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any, Mapping

import phonenumbers

from shared import events as ev
from shared.intake_ledger import TICKET_PREFIX

from services.intake_chat.validation import InvalidInput, client_message_id, message_text

COMMENT_MAX_CHARS = 2000  # CsatSubmitted.comment
CONTACT_MAX_CHARS = 320
TICKET_INPUT_MAX_CHARS = 32
SCORES = (1, 2, 3, 4, 5)

_TICKET_NUMBER = re.compile(r"^#?\s*(?:TM\s*-?\s*)?(\d{1,18})$", re.IGNORECASE)
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Lookup:
    ticket_id: str | None   # None: not a ticket number at all (still answered like a wrong one)
    contact_hash: str | None


@dataclass(frozen=True)
class Reply:
    client_message_id: str
    text: str


@dataclass(frozen=True)
class SurveyAnswer:
    score: int
    comment: str


def ticket_number(raw: Any) -> str | None:
    """``TM-10001``, ``tm-10001``, ``#TM-10001`` or ``10001`` → ``TM-10001``; None otherwise."""
    if not isinstance(raw, str) or len(raw) > TICKET_INPUT_MAX_CHARS:
        return None
    found = _TICKET_NUMBER.match(raw.strip())
    return f"{TICKET_PREFIX}{int(found.group(1))}" if found else None


def normalize_email(raw: str) -> str | None:
    value = raw.strip().lower()
    return value if _EMAIL.match(value) and len(value) <= CONTACT_MAX_CHARS else None


def normalize_phone(raw: str, region: str) -> str | None:
    """E.164 if the number parses and is valid in ``region`` (or carries its country code)."""
    text = raw.strip()
    if not text or len(text) > 64:
        return None
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def hash_contact(secret: bytes, kind: str, normalized: str) -> str:
    digest = hmac.new(secret, f"ticketmesh-contact:{kind}:{normalized}".encode(), hashlib.sha256).hexdigest()
    return digest[:32]


def contact_hash(secret: bytes, raw: str, region: str) -> str | None:
    """The hash of an email address or phone number as typed; None when it is neither."""
    if "@" in raw:
        email = normalize_email(raw)
        return hash_contact(secret, "email", email) if email else None
    phone = normalize_phone(raw, region)
    return hash_contact(secret, "phone", phone) if phone else None


def contact_hashes(secret: bytes, customer: ev.Customer | None, region: str) -> list[str]:
    """Hashes of the ways an event's customer can prove who they are (email, phone).

    When the channel says which identifiers it verified (the mail's sender, the caller id),
    only those count: an address a chat visitor merely typed must not open the ticket to
    whoever owns that address. An event that says nothing (a producer from before
    ``Customer.verified``) has all of them counted."""
    if customer is None:
        return []
    given = (("email", customer.email), ("phone", customer.phone))
    trusted = [value for kind, value in given if value and (not customer.verified or kind in customer.verified)]
    found = [contact_hash(secret, value, region) for value in trusted]
    return [h for h in found if h]


def _field(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    return value if isinstance(value, str) else ""


def lookup(data: Mapping[str, Any], *, secret: bytes, region: str) -> Lookup:
    """The status lookup form: ``ticket`` and ``contact`` (email or phone). Never raises: a bad
    field is answered exactly like a wrong one, so the answer tells an attacker nothing."""
    contact = _field(data, "contact")[:CONTACT_MAX_CHARS]
    return Lookup(ticket_number(_field(data, "ticket")), contact_hash(secret, contact, region) if contact else None)


def reply(data: Mapping[str, Any]) -> Reply:
    """A customer's reply from the status page (same limits as a chat message)."""
    return Reply(client_message_id(data.get("client_message_id")), message_text(data.get("text")))


def survey_answer(data: Mapping[str, Any]) -> SurveyAnswer:
    raw_score = data.get("score")
    try:
        score = int(raw_score) if isinstance(raw_score, (str, int)) and not isinstance(raw_score, bool) else 0
    except ValueError:
        score = 0
    if score not in SCORES:
        raise InvalidInput("invalid_score", "score must be a whole number from 1 to 5")
    comment = data.get("comment", "")
    if comment is None:
        comment = ""
    if not isinstance(comment, str):
        raise InvalidInput("invalid_comment", "comment must be text")
    comment = _CONTROLS.sub("", comment.replace("\r\n", "\n").replace("\r", "\n")).strip()
    if len(comment) > COMMENT_MAX_CHARS:
        raise InvalidInput("comment_too_long", f"comment must be at most {COMMENT_MAX_CHARS} characters")
    return SurveyAnswer(score, comment)
