"""One call's life from CTI events, tolerant of repeats and out-of-order delivery.

A PBX posts ``newCall``, ``answer`` and ``hangup`` for each call. Webhooks are retried and
can arrive twice or out of order (a retried ``newCall`` after the ``hangup``), so the state
is a merge, not a sequence:

- identity fields (direction, numbers, queue) are filled by the first event that knows them;
- the first ``newCall`` stamps ``rang_at``, the first ``answer`` stamps ``answered_at`` (and
  whether voicemail took it), the first ``hangup`` stamps ``ended_at`` and ``cause``; repeats
  change nothing;
- an ``answer`` that arrives after the ``hangup`` is ignored, as Zammad does: the call was
  judged at hang-up.

A call is *missed* (Zammad's ``done=false``) when it is inbound, has ended, and either nobody
answered and the cause is not ``forwarded`` (the PBX passed it to another destination, which
reports its own outcome), or the voicemail answered. A missed call from a number that can be
called back becomes a callback ticket.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Literal

from services.intake_phone.phone_numbers import Number, display

EventKind = Literal["newCall", "answer", "hangup"]
Direction = Literal["in", "out"]
EVENT_KINDS: tuple[str, ...] = ("newCall", "answer", "hangup")
DIRECTIONS: tuple[str, ...] = ("in", "out")
FORWARDED = "forwarded"
VOICEMAIL = "voicemail"

_CAUSE_ZH = {
    "normalClearing": "对方挂断", "busy": "忙线", "cancel": "来电方取消", "noAnswer": "无人接听",
    "congestion": "线路拥塞", "notFound": "号码不存在", "": "原因未知",
}


@dataclass(frozen=True)
class CallEvent:
    kind: EventKind
    call_id: str
    direction: Direction | None = None
    from_number: Number | None = None
    to_number: Number | None = None
    cause: str = ""
    users: tuple[str, ...] = ()
    queue: str = ""
    answering_number: str = ""

    @property
    def by_voicemail(self) -> bool:
        return any(u.strip().lower() == VOICEMAIL for u in self.users) or self.answering_number.strip().lower() == VOICEMAIL


@dataclass(frozen=True)
class CallState:
    call_id: str
    trace_id: str
    direction: Direction | None = None
    from_kind: str = ""  # "" until an event says; then "e164" | "extension" | "hidden"
    from_number: str = ""
    to_kind: str = ""
    to_number: str = ""
    queue: str = ""
    rang_at: datetime | None = None
    answered_at: datetime | None = None
    answered_by: tuple[str, ...] = field(default_factory=tuple)
    voicemail: bool = False
    ended_at: datetime | None = None
    cause: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("rang_at", "answered_at", "ended_at"):
            data[key] = data[key].isoformat() if data[key] else None
        data["answered_by"] = list(self.answered_by)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CallState":
        values = dict(data)
        for key in ("rang_at", "answered_at", "ended_at"):
            values[key] = datetime.fromisoformat(values[key]) if values.get(key) else None
        values["answered_by"] = tuple(values.get("answered_by") or ())
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in values.items() if k in known})


def apply(state: CallState | None, event: CallEvent, *, now: datetime, trace_id: str) -> CallState:
    """The call after ``event``; ``trace_id`` is used only when this is the first event seen."""
    current = state or CallState(call_id=event.call_id, trace_id=trace_id)
    changes: dict[str, Any] = {}
    if current.direction is None and event.direction is not None:
        changes["direction"] = event.direction
    if not current.from_kind and event.from_number is not None:
        changes.update(from_kind=event.from_number.kind, from_number=event.from_number.value)
    if not current.to_kind and event.to_number is not None:
        changes.update(to_kind=event.to_number.kind, to_number=event.to_number.value)
    if not current.queue and event.queue:
        changes["queue"] = event.queue

    if event.kind == "newCall" and current.rang_at is None:
        changes["rang_at"] = now
    elif event.kind == "answer" and current.answered_at is None and current.ended_at is None:
        changes.update(answered_at=now, answered_by=event.users, voicemail=event.by_voicemail)
    elif event.kind == "hangup" and current.ended_at is None:
        changes.update(ended_at=now, cause=event.cause)
    return replace(current, **changes) if changes else current


def is_missed(state: CallState) -> bool:
    if state.direction != "in" or state.ended_at is None:
        return False
    if state.voicemail:
        return True
    return state.answered_at is None and state.cause != FORWARDED


def needs_callback_ticket(state: CallState) -> bool:
    """Missed, and the caller left a number someone can call back."""
    return is_missed(state) and state.from_kind == "e164"


def callback_ticket_fields(state: CallState) -> dict[str, Any]:
    """The ``ticket_received`` fields (minus envelope) for a missed call; see needs_callback_ticket."""
    caller = display(state.from_number)
    callee = display(state.to_number) if state.to_kind == "e164" else (state.to_number or "?")
    at = state.rang_at or state.ended_at
    assert at is not None and state.ended_at is not None
    when = at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    queue_zh = f"（队列：{state.queue}）" if state.queue else ""
    queue_en = f" (queue {state.queue})" if state.queue else ""
    if state.voicemail:
        outcome_zh, outcome_en = "转入语音信箱", "went to voicemail"
    else:
        outcome_zh = f"未接通（{_CAUSE_ZH.get(state.cause, state.cause)}）"
        outcome_en = f"not answered ({state.cause or 'cause unknown'})"
    text = (
        f"未接来电：{caller} 于 {when} 致电 {callee}{queue_zh}，{outcome_zh}。请回电。\n"
        f"Missed call from {caller} to {callee}{queue_en} at {when}, {outcome_en}. Please call back."
    )
    return {
        "channel": "phone",
        # The caller id is what the phone network says (hidden callers have none).
        "customer": {"name": "", "phone": state.from_number, "verified": ["phone"] if state.from_number else []},
        "subject": f"未接来电 / Missed call from {caller}",
        "text": text,
        "received_at": state.ended_at,
        "source": {"call_id": state.call_id, "to": state.to_number, "queue": state.queue,
                   "cause": VOICEMAIL if state.voicemail else state.cause},
    }
