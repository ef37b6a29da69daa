"""The Generic CTI webhook's fields (Zammad-compatible) → a validated CallEvent.

Fields: ``event`` (newCall/answer/hangup), ``from``, ``to``, ``direction`` (in/out), ``callId``
or ``call_id`` (≤250 chars), ``cause``, ``user`` (one name or a list; ``user[]`` in forms),
``queue``, ``answeringNumber``. Values may come from JSON (strings, numbers) or a form (lists of
strings). Anything unusable raises CtiError with a code for the 400 answer.
"""
from __future__ import annotations

from typing import Any, Mapping

from services.intake_phone.calls import DIRECTIONS, EVENT_KINDS, CallEvent
from services.intake_phone.phone_numbers import InvalidNumber, Number, normalize

CALL_ID_MAX_CHARS = 250
NAME_MAX_CHARS = 200
USERS_MAX = 20
SHORT_FIELD_MAX_CHARS = 64


class CtiError(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _scalar(fields: Mapping[str, Any], name: str, max_chars: int) -> str:
    value = fields.get(name)
    if value is None:
        return ""
    if isinstance(value, list):  # a form field sent once arrives as a one-element list
        if len(value) != 1:
            raise CtiError("invalid_field", f"{name} must be given once")
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise CtiError("invalid_field", f"{name} must be a string")
    text = str(value).strip()
    if len(text) > max_chars:
        raise CtiError("invalid_field", f"{name} is longer than {max_chars} characters")
    return text


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


def parse_cti(fields: Mapping[str, Any], default_region: str) -> CallEvent:
    kind = _scalar(fields, "event", SHORT_FIELD_MAX_CHARS)
    if kind not in EVENT_KINDS:
        raise CtiError("invalid_event", f"event must be one of {', '.join(EVENT_KINDS)}")
    call_id = _scalar(fields, "callId", CALL_ID_MAX_CHARS) or _scalar(fields, "call_id", CALL_ID_MAX_CHARS)
    if not call_id:
        raise CtiError("missing_call_id", "callId is required")
    direction = _scalar(fields, "direction", SHORT_FIELD_MAX_CHARS) or None
    if direction is not None and direction not in DIRECTIONS:
        raise CtiError("invalid_direction", "direction must be in or out")
    if kind == "newCall" and direction is None:
        raise CtiError("invalid_direction", "direction is required for newCall")
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
    )
