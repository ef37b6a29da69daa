"""One call's life from CTI events, tolerant of repeats and out-of-order delivery, and the
ticket it becomes.

A PBX posts ``newCall``, ``answer`` and ``hangup`` for each call (Zammad's Generic CTI), and
ours may add two events of this project's own: ``wrapUp`` (the agent's wrap-up code and notes
after an answered call) and ``voicemail`` (the recording URL and transcript, often ready only
after the hang-up). The wrap-up and voicemail fields are also accepted on any event, usually
``hangup``. Webhooks are retried and can arrive twice or out of order, so the state is a merge,
not a sequence:

- identity fields (direction, numbers, queue) are filled by the first event that knows them;
- the first ``newCall`` stamps ``rang_at``, the first ``answer`` stamps ``answered_at`` (and
  whether voicemail took it), the first ``hangup`` stamps ``ended_at`` and ``cause``, the first
  wrap-up and the first recording URL / transcript are kept; repeats change nothing;
- an ``answer`` (or a wrap-up standing in for one) that arrives after the ``hangup`` does not
  make the call answered, as in Zammad: the call was judged at hang-up.

What the call becomes (:func:`ticket_kind`), inbound calls only:

- ``voicemail``: the voicemail took the call (``answer`` by user/answeringNumber "voicemail",
  or a ``voicemail`` event), once it ended or its recording/transcript arrived;
- ``call``: a person answered and the wrap-up arrived (no wrap-up, no ticket);
- ``callback``: it ended unanswered (missed, or abandoned in a queue) and the cause is not
  ``forwarded`` (the PBX passed it on; the destination reports its own outcome), from a number
  someone can call back.

The line's policy may turn any of these off. Pure: time is passed in.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Literal

from shared.intake_ledger import natural_key_hash

from services.intake_phone.phone_numbers import Number, display
from services.intake_phone.policy import LinePolicy, WrapUpOutcome

EventKind = Literal["newCall", "answer", "hangup", "wrapUp", "voicemail"]
Direction = Literal["in", "out"]
TicketKind = Literal["callback", "voicemail", "call"]
GENERIC_CTI_EVENTS: tuple[str, ...] = ("newCall", "answer", "hangup")
EXTENSION_EVENTS: tuple[str, ...] = ("wrapUp", "voicemail")
EVENT_KINDS: tuple[str, ...] = GENERIC_CTI_EVENTS + EXTENSION_EVENTS
DIRECTIONS: tuple[str, ...] = ("in", "out")
FORWARDED = "forwarded"
VOICEMAIL = "voicemail"
# Kinds a repeated call from the same number folds into (see the line's fold window).
FOLDABLE: tuple[str, ...] = ("callback", "voicemail")
# What has been published for a call (CallState.announced).
ANNOUNCED_TICKET = "ticket"          # its ticket_received, or its message on the ticket it folded into
ANNOUNCED_VOICEMAIL = "voicemail"    # its recording/transcript reached the ticket

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
    context: str = ""               # Asterisk dialplan context (CDR import only)
    wrap_up_code: str = ""
    notes: str = ""
    agent: str = ""                 # roster agent id of who took the call (wrap-up)
    recording_url: str = ""
    transcript: str = ""

    @property
    def by_voicemail(self) -> bool:
        return any(u.strip().lower() == VOICEMAIL for u in self.users) or self.answering_number.strip().lower() == VOICEMAIL

    @property
    def has_wrap_up(self) -> bool:
        return self.kind == "wrapUp" or bool(self.wrap_up_code or self.notes)

    @property
    def has_voicemail_content(self) -> bool:
        return bool(self.recording_url or self.transcript)


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
    context: str = ""
    rang_at: datetime | None = None
    answered_at: datetime | None = None
    answered_by: tuple[str, ...] = field(default_factory=tuple)
    voicemail: bool = False
    ended_at: datetime | None = None
    cause: str = ""
    wrapped_up_at: datetime | None = None
    wrap_up_code: str = ""
    notes: str = ""
    agent: str = ""
    voicemail_at: datetime | None = None   # when the recording/transcript arrived
    recording_url: str = ""
    transcript: str = ""
    # Which ticket the call went to: its own, or (folded) an earlier call's from the same number.
    ticket_id: str = ""
    ticket_trace_id: str = ""
    folded: bool = False
    announced: tuple[str, ...] = field(default_factory=tuple)

    _TIMES = ("rang_at", "answered_at", "ended_at", "wrapped_up_at", "voicemail_at")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in self._TIMES:
            data[key] = data[key].isoformat() if data[key] else None
        data["answered_by"] = list(self.answered_by)
        data["announced"] = list(self.announced)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CallState":
        values = dict(data)
        for key in cls._TIMES:
            values[key] = datetime.fromisoformat(values[key]) if values.get(key) else None
        values["answered_by"] = tuple(values.get("answered_by") or ())
        values["announced"] = tuple(values.get("announced") or ())
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in values.items() if k in known})

    @property
    def has_voicemail_content(self) -> bool:
        return bool(self.recording_url or self.transcript)

    @property
    def callable_back(self) -> bool:
        return self.from_kind == "e164"


def apply(state: CallState | None, event: CallEvent, *, now: datetime, trace_id: str) -> CallState:
    """The call after ``event``; ``trace_id`` is used only when this is the first event seen."""
    current = state or CallState(call_id=event.call_id, trace_id=trace_id)
    changes: dict[str, Any] = {}
    direction = event.direction or ("in" if event.kind == "voicemail" else None)  # voicemail answers callers
    if current.direction is None and direction is not None:
        changes["direction"] = direction
    if not current.from_kind and event.from_number is not None:
        changes.update(from_kind=event.from_number.kind, from_number=event.from_number.value)
    if not current.to_kind and event.to_number is not None:
        changes.update(to_kind=event.to_number.kind, to_number=event.to_number.value)
    if not current.queue and event.queue:
        changes["queue"] = event.queue
    if not current.context and event.context:
        changes["context"] = event.context

    not_answered_yet = current.answered_at is None and current.ended_at is None
    if event.kind == "newCall" and current.rang_at is None:
        changes["rang_at"] = now
    elif event.kind == "answer" and not_answered_yet:
        changes.update(answered_at=now, answered_by=event.users, voicemail=event.by_voicemail)
    elif event.kind == "hangup" and current.ended_at is None:
        changes.update(ended_at=now, cause=event.cause)
    elif event.kind == "voicemail" and current.answered_at is None and not current.voicemail:
        # Nobody answered, so the caller left a message; a PBX that never reported the voicemail
        # answering (or reported it after the hang-up) still gets a voicemail, not a missed call.
        changes.update(voicemail=True, answered_by=(VOICEMAIL,))
        if current.ended_at is None:
            changes["answered_at"] = now

    if event.has_wrap_up and current.wrapped_up_at is None:
        changes.update(wrapped_up_at=now, wrap_up_code=event.wrap_up_code, notes=event.notes, agent=event.agent)
        if not_answered_yet and "answered_at" not in changes:
            # An agent wrapping up took the call, whichever of the two events came first.
            changes.update(answered_at=now, answered_by=(event.agent,) if event.agent else ())
    if event.has_voicemail_content and current.voicemail_at is None:
        changes.update(voicemail_at=now, recording_url=event.recording_url, transcript=event.transcript)
    return replace(current, **changes) if changes else current


def ticket_kind(state: CallState, line: LinePolicy) -> tuple[TicketKind | None, str]:
    """What the call becomes under ``line``'s policy now, and why not when it becomes nothing."""
    if state.direction != "in":
        return None, "outbound" if state.direction == "out" else "direction_unknown"
    if state.voicemail:
        if state.ended_at is None and state.voicemail_at is None:
            return None, "in_progress"
        return ("voicemail", "") if line.voicemail == "ticket" else (None, "voicemail_ignored_by_policy")
    if state.answered_at is not None:
        if state.wrapped_up_at is None:
            return None, "answered_without_wrap_up"
        return ("call", "") if line.answered == "wrap_up" else (None, "answered_ignored_by_policy")
    if state.ended_at is None:
        return None, "in_progress"
    if state.cause == FORWARDED:
        return None, "forwarded"
    if not state.callable_back:
        return None, f"missed_without_number:{state.from_kind or 'unknown'}"
    return ("callback", "") if line.missed == "callback" else (None, "missed_ignored_by_policy")


def is_missed(state: CallState) -> bool:
    """Zammad's ``done=false``: inbound, ended, and nobody (but maybe the voicemail) answered."""
    if state.direction != "in" or state.ended_at is None:
        return False
    if state.voicemail:
        return True
    return state.answered_at is None and state.cause != FORWARDED


def contact_time(state: CallState) -> datetime:
    """When the customer's contact happened, for received_at and fold windows."""
    at = state.ended_at or state.voicemail_at or state.wrapped_up_at or state.answered_at or state.rang_at
    assert at is not None, "a call with a ticket kind has at least one timestamp"
    return at


def linked(state: CallState, ticket_id: str, *, folded: bool, ticket_trace_id: str) -> CallState:
    """The call with its ticket; a call already linked keeps its ticket (first decision wins)."""
    if state.ticket_id:
        return state
    return replace(state, ticket_id=ticket_id, folded=folded, ticket_trace_id=ticket_trace_id)


def with_announced(state: CallState, *marks: str) -> CallState:
    new = tuple(m for m in marks if m not in state.announced)
    return replace(state, announced=state.announced + new) if new else state


def message_id(kind: str, call_id: str) -> str:
    """The message id a call (or its voicemail) has on a ticket: the same on every retry."""
    return f"{kind}-{natural_key_hash(call_id)}"


# -- what the ticket says ---------------------------------------------------------------------

def _caller(state: CallState) -> str:
    if state.from_kind == "e164":
        return display(state.from_number)
    if state.from_kind == "extension":
        return f"分机 / ext. {state.from_number}"
    return "未知号码 / unknown number"


def _callee(state: CallState) -> str:
    return display(state.to_number) if state.to_kind == "e164" else (state.to_number or "?")


def _when(at: datetime) -> str:
    return at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _customer(state: CallState) -> dict[str, Any]:
    # The caller id is what the phone network says (a hidden caller or an extension proves nothing).
    callable_back = state.callable_back
    return {"name": "", "phone": state.from_number if callable_back else None,
            "verified": ["phone"] if callable_back else []}


def _source(state: CallState, line: LinePolicy, category: str, *, callback: bool) -> dict[str, str]:
    """``source`` of the ticket. ``category`` ("callback", "voicemail", "call") lets SLA policies
    give callbacks their own targets; ``callback`` is what the dispatcher's callback priority reads;
    ``queue``/``line`` feed the routing rules' queue condition."""
    source = {"call_id": state.call_id, "to": state.to_number, "queue": state.queue, "line": line.name,
              "category": category, "callback": "true" if callback else "false"}
    if category != "call":
        source["cause"] = VOICEMAIL if state.voicemail else state.cause
    if state.recording_url:
        source["recording_url"] = state.recording_url
    return source


def _missed_sentence(state: CallState, at: datetime, *, again: bool = False) -> str:
    queue_zh = f"（队列：{state.queue}）" if state.queue else ""
    queue_en = f" (queue {state.queue})" if state.queue else ""
    outcome_zh = f"未接通（{_CAUSE_ZH.get(state.cause, state.cause)}）"
    outcome_en = f"not answered ({state.cause or 'cause unknown'})"
    lead_zh, lead_en = ("再次未接来电", "Another missed call") if again else ("未接来电", "Missed call")
    return (f"{lead_zh}：{_caller(state)} 于 {_when(at)} 致电 {_callee(state)}{queue_zh}，{outcome_zh}。请回电。\n"
            f"{lead_en} from {_caller(state)} to {_callee(state)}{queue_en} at {_when(at)}, {outcome_en}. "
            f"Please call back.")


def _voicemail_text(state: CallState, at: datetime) -> str:
    transcript = state.transcript.strip() or "（暂无语音转写）/ (no transcript yet)"
    lines = [transcript, "",
             f"语音留言：{_caller(state)} 于 {_when(at)} 致电 {_callee(state)}。请回电。",
             f"Voicemail from {_caller(state)} to {_callee(state)} at {_when(at)}. Please call back."]
    if state.recording_url:
        lines.append(f"录音 / Recording: {state.recording_url}")
    return "\n".join(lines)


def _call_text(state: CallState, at: datetime, outcome: WrapUpOutcome) -> str:
    who = state.agent or ", ".join(state.answered_by) or "?"
    notes = state.notes.strip() or "（无备注）/ (no notes)"
    code = state.wrap_up_code or "-"
    outcome_zh, outcome_en = ("通话中已解决", "resolved on the call") if outcome == "resolved" else ("待跟进", "needs follow-up")
    return "\n".join([
        notes, "",
        f"来电：{_caller(state)} 于 {_when(at)} 致电 {_callee(state)}，{who} 接听；结束代码 {code}，{outcome_zh}。",
        f"Call from {_caller(state)} to {_callee(state)} at {_when(at)}, answered by {who}; wrap-up {code}, "
        f"{outcome_en}.",
    ])


def ticket_fields(state: CallState, kind: TicketKind, line: LinePolicy,
                  outcome: WrapUpOutcome = "open") -> dict[str, Any]:
    """The ``ticket_received`` fields (minus envelope) of a call that opens its own ticket.

    A ``call`` resolved on first contact says so in ``source["resolved_on_first_contact"]``
    (with ``source["agent_id"]`` when the wrap-up named the agent): the dispatcher does not
    route it and the desk shows it resolved (see shared.events.resolved_at_intake).
    """
    at = contact_time(state)
    if kind == "callback":
        subject, text = f"未接来电 / Missed call from {_caller(state)}", _missed_sentence(state, at)
        source = _source(state, line, "callback", callback=True)
    elif kind == "voicemail":
        subject, text = f"语音留言 / Voicemail from {_caller(state)}", _voicemail_text(state, at)
        source = _source(state, line, "voicemail", callback=True)
    else:
        label = f" ({state.wrap_up_code})" if state.wrap_up_code else ""
        subject, text = f"来电记录 / Call from {_caller(state)}{label}", _call_text(state, at, outcome)
        source = _source(state, line, "call", callback=False)
        source["wrap_up_code"] = state.wrap_up_code
        source["resolved_on_first_contact"] = "true" if outcome == "resolved" else "false"
        if state.agent:
            source["agent_id"] = state.agent
        if state.answered_by:
            source["answered_by"] = ", ".join(state.answered_by)
    return {"channel": "phone", "customer": _customer(state), "subject": subject, "text": text,
            "received_at": at, "source": source}


def callback_ticket_fields(state: CallState, line: LinePolicy | None = None) -> dict[str, Any]:
    """``ticket_fields`` of a missed call (kept for callers that know it is one)."""
    return ticket_fields(state, "callback", line or LinePolicy("default"))


def folded_message_fields(state: CallState, kind: TicketKind, line: LinePolicy) -> dict[str, Any]:
    """The ``message_received`` fields (minus envelope) of a call folded into an earlier call's
    ticket: the customer tried again (and maybe left a voicemail)."""
    at = contact_time(state)
    text = _voicemail_text(state, at) if kind == "voicemail" else _missed_sentence(state, at, again=True)
    source = _source(state, line, kind, callback=True)
    source["folded"] = "true"
    return {"channel": "phone", "customer": _customer(state), "text": text,
            "message_id": message_id("call", state.call_id), "received_at": at, "source": source}


def voicemail_message_fields(state: CallState, line: LinePolicy) -> dict[str, Any]:
    """The ``message_received`` fields of a recording/transcript that arrived after the call's
    ticket was opened (transcription usually finishes after the hang-up)."""
    assert state.voicemail_at is not None
    source = _source(state, line, "voicemail", callback=True)
    return {"channel": "phone", "customer": _customer(state), "text": _voicemail_text(state, state.voicemail_at),
            "message_id": message_id("voicemail", state.call_id), "received_at": state.voicemail_at,
            "source": source}
