"""The Generic CTI webhook's fields (Zammad-compatible) → a validated CallEvent.

Generic CTI fields: ``event`` (newCall/answer/hangup), ``from``, ``to``, ``direction`` (in/out),
``callId`` or ``call_id`` (≤250 chars), ``cause``, ``user`` (one name or a list; ``user[]`` in
forms), ``queue``, ``answeringNumber``.

This project's extension (a PBX that does not send them loses nothing):

- ``event=wrapUp`` with ``wrapUpCode``, ``notes`` and ``agent`` (the roster agent id): the
  agent's wrap-up after an answered call. The same three fields are accepted on ``hangup``.
- ``event=voicemail`` with ``recordingUrl`` (http/https) and ``transcript``: what the caller
  left. Both fields are accepted on ``hangup`` too. A voicemail event implies ``direction=in``.

``snake_case`` spellings (``wrap_up_code``, ``recording_url``) are accepted like ``call_id``.
Values may come from JSON (strings, numbers) or a form (lists of strings). Fields nobody defined
are ignored. Anything unusable raises CtiError with a code for the 400 answer.
"""
from __future__ import annotations

from typing import Any, Mapping
from urllib.parse import urlsplit

from services.intake_phone.calls import DIRECTIONS, EVENT_KINDS, CallEvent
from services.intake_phone.phone_numbers import InvalidNumber, Number, normalize

CALL_ID_MAX_CHARS = 250
NAME_MAX_CHARS = 200
USERS_MAX = 20
SHORT_FIELD_MAX_CHARS = 64
NOTES_MAX_CHARS = 10_000
TRANSCRIPT_MAX_CHARS = 50_000      # a long voicemail transcribed; the body limit is the real cap
URL_MAX_CHARS = 2_000
AGENT_ID_MAX_CHARS = 64


class CtiError(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _scalar(fields: Mapping[str, Any], name: str, max_chars: int, *, strip: bool = True) -> str:
    value = fields.get(name)
    if value is None:
        return ""
    if isinstance(value, list):  # a form field sent once arrives as a one-element list
        if len(value) != 1:
            raise CtiError("invalid_field", f"{name} must be given once")
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise CtiError("invalid_field", f"{name} must be a string")
    text = str(value).strip() if strip else str(value)
    if len(text) > max_chars:
        raise CtiError("invalid_field", f"{name} is longer than {max_chars} characters")
    if "\x00" in text:
        raise CtiError("invalid_field", f"{name} contains a NUL character")
    return text


def _either(fields: Mapping[str, Any], names: tuple[str, ...], max_chars: int) -> str:
    for name in names:
        value = _scalar(fields, name, max_chars)
        if value:
            return value
    return ""


def _users(fields: Mapping[str, Any]) -> tuple[str, ...]:
    values: list[Any] = []
    for name in ("user", "user[]"):
        value = fields.get(name)
        if value is None:
            continue
        values.extend(value if isinstance(value, list) else [value])
    if len(values) > USERS_MAX:
        raise CtiError("invalid_field", f"user lists more than {USERS_MAX} names")
    users = []
    for value in values:
        if not isinstance(value, str) or len(value) > NAME_MAX_CHARS:
            raise CtiError("invalid_field", f"user must be names of at most {NAME_MAX_CHARS} characters")
        if value.strip():
            users.append(value.strip())
    return tuple(users)


def _number(fields: Mapping[str, Any], name: str, default_region: str) -> Number | None:
    raw = _scalar(fields, name, SHORT_FIELD_MAX_CHARS)
    if name not in fields:
        return None
    try:
        return normalize(raw, default_region)
    except InvalidNumber as exc:
        raise CtiError("invalid_number", f"{name} is {exc.reason}") from None


def _url(fields: Mapping[str, Any]) -> str:
    url = _either(fields, ("recordingUrl", "recording_url"), URL_MAX_CHARS)
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in url):
        raise CtiError("invalid_field", "recordingUrl must be an http or https URL")
    return url


def _agent(fields: Mapping[str, Any]) -> str:
    agent = _scalar(fields, "agent", AGENT_ID_MAX_CHARS)
    if agent and not all(c.isalnum() or c in "._-@" for c in agent):
        raise CtiError("invalid_field", "agent must be a roster agent id (letters, digits, . _ - @)")
    return agent


def parse_cti(fields: Mapping[str, Any], default_region: str) -> CallEvent:
    kind = _scalar(fields, "event", SHORT_FIELD_MAX_CHARS)
    if kind not in EVENT_KINDS:
        raise CtiError("invalid_event", f"event must be one of {', '.join(EVENT_KINDS)}")
    call_id = _either(fields, ("callId", "call_id"), CALL_ID_MAX_CHARS)
    if not call_id:
        raise CtiError("missing_call_id", "callId is required")
    direction = _scalar(fields, "direction", SHORT_FIELD_MAX_CHARS) or None
    if direction is not None and direction not in DIRECTIONS:
        raise CtiError("invalid_direction", "direction must be in or out")
    if kind == "newCall" and direction is None:
        raise CtiError("invalid_direction", "direction is required for newCall")
    if kind == "voicemail" and direction == "out":
        raise CtiError("invalid_direction", "a voicemail is left by an inbound caller")
    return CallEvent(
        kind=kind,  # type: ignore[arg-type]
        call_id=call_id,
        direction=direction,  # type: ignore[arg-type]
        from_number=_number(fields, "from", default_region),
        to_number=_number(fields, "to", default_region),
        cause=_scalar(fields, "cause", SHORT_FIELD_MAX_CHARS),
        users=_users(fields),
        queue=_scalar(fields, "queue", NAME_MAX_CHARS),
        answering_number=_scalar(fields, "answeringNumber", SHORT_FIELD_MAX_CHARS),
        wrap_up_code=_either(fields, ("wrapUpCode", "wrap_up_code"), SHORT_FIELD_MAX_CHARS),
        notes=_scalar(fields, "notes", NOTES_MAX_CHARS),
        agent=_agent(fields),
        recording_url=_url(fields),
        transcript=_scalar(fields, "transcript", TRANSCRIPT_MAX_CHARS),
    )
