"""Phone numbers as the PBX sends them → E.164, with internal extensions and hidden callers kept apart.

A PBX reports numbers the way its users dial them: ``13812345678``, ``010 1234 5678``,
``0086 138…``, ``+86-138…``. They are parsed against a default region (CN unless configured) and
stored in E.164 so that the same customer is the same number whichever way it was written.
Short all-digit strings (up to ``EXTENSION_MAX_DIGITS``) are internal extensions or service
short codes, and "anonymous"/empty means the caller withheld the number: neither is an error,
neither can be called back.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import phonenumbers

EXTENSION_MAX_DIGITS = 6
RAW_MAX_CHARS = 64
HIDDEN_CALLER_IDS = frozenset({"", "anonymous", "unknown", "private", "restricted", "withheld", "unavailable"})

_EXTENSION = re.compile(rf"^\d{{1,{EXTENSION_MAX_DIGITS}}}$")

Kind = Literal["e164", "extension", "hidden"]


class InvalidNumber(ValueError):
    """The string is not a phone number we can use (``reason`` says why)."""

    def __init__(self, raw: str, reason: str):
        super().__init__(f"{raw!r}: {reason}")
        self.raw = raw
        self.reason = reason


@dataclass(frozen=True)
class Number:
    kind: Kind
    value: str  # E.164 for "e164", the digits for "extension", "" for "hidden"

    @property
    def callable_back(self) -> bool:
        return self.kind == "e164"


def normalize(raw: str, default_region: str) -> Number:
    """Classify and normalize one number; raise InvalidNumber for anything that is not one."""
    text = raw.strip()
    if text.lower() in HIDDEN_CALLER_IDS:
        return Number("hidden", "")
    if len(text) > RAW_MAX_CHARS:
        raise InvalidNumber(raw, f"longer than {RAW_MAX_CHARS} characters")
    if _EXTENSION.match(text):
        return Number("extension", text)
    try:
        parsed = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidNumber(raw, f"not a phone number ({exc})") from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidNumber(raw, "not a valid phone number")
    return Number("e164", phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


def display(e164: str) -> str:
    """``+8613812345678`` → ``+86 138 1234 5678`` (for subjects people read)."""
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
