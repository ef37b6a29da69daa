from datetime import datetime, timedelta, timezone

from services.intake_phone import calls
from services.intake_phone.calls import CallEvent, CallState
from services.intake_phone.phone_numbers import Number

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=timezone.utc)
CALLER = Number("e164", "+8613812345678")
HOTLINE = Number("e164", "+861088888888")


def event(kind, **over):
    fields = dict(kind=kind, call_id="c-1", direction="in", from_number=CALLER, to_number=HOTLINE)
    fields.update(over)
    return CallEvent(**fields)


def run(*events, start=T0):
    state = None
    for i, e in enumerate(events):
        state = calls.apply(state, e, now=start + timedelta(seconds=10 * i), trace_id=f"trace-{i}")
    return state


def test_answered_call_is_not_missed():
    state = run(event("newCall"), event("answer", users=("李娜",)), event("hangup", cause="normalClearing"))
    assert state.answered_by == ("李娜",) and state.ended_at == T0 + timedelta(seconds=20)
    assert not calls.is_missed(state) and not calls.needs_callback_ticket(state)


def test_hangup_without_answer_is_missed_and_needs_a_callback():
    state = run(event("newCall", queue="sales"), event("hangup", cause="cancel"))
    assert calls.is_missed(state) and calls.needs_callback_ticket(state)
    fields = calls.callback_ticket_fields(state)
    assert fields["customer"] == {"name": "", "phone": "+8613812345678", "verified": ["phone"]}
    assert fields["subject"] == "未接来电 / Missed call from +86 138 1234 5678"
    assert fields["source"] == {"call_id": "c-1", "to": "+861088888888", "queue": "sales", "cause": "cancel"}
    assert "请回电" in fields["text"] and "Please call back" in fields["text"]
    assert fields["received_at"] == T0 + timedelta(seconds=10)


def test_forwarded_call_is_not_missed():
    assert not calls.is_missed(run(event("newCall"), event("hangup", cause="forwarded")))


def test_answered_by_voicemail_is_missed():
    state = run(event("newCall"), event("answer", users=("voicemail",)), event("hangup", cause="normalClearing"))
    assert calls.is_missed(state)
    assert calls.callback_ticket_fields(state)["source"]["cause"] == "voicemail"
    by_number = run(event("newCall"), event("answer", answering_number="VoiceMail"), event("hangup"))
    assert calls.is_missed(by_number)


def test_outbound_calls_are_never_missed():
    assert not calls.is_missed(run(event("newCall", direction="out"), event("hangup", cause="noAnswer")))


def test_hangup_before_newcall_is_judged_with_what_it_carries():
    state = run(event("hangup", cause="noAnswer"), event("newCall"))
    assert state.ended_at == T0 and state.rang_at == T0 + timedelta(seconds=10)
    assert state.trace_id == "trace-0"  # the first event seen names the trace
    assert calls.is_missed(state)


def test_direction_learned_from_a_late_newcall_makes_the_call_missed_then():
    hangup_only = run(event("hangup", direction=None, cause="cancel"))
    assert not calls.is_missed(hangup_only)  # unknown direction: might be outbound
    later = calls.apply(hangup_only, event("newCall"), now=T0 + timedelta(seconds=30), trace_id="x")
    assert calls.is_missed(later)


def test_answer_after_hangup_is_ignored():
    state = run(event("newCall"), event("hangup", cause="cancel"), event("answer", users=("li.na",)))
    assert state.answered_at is None and calls.is_missed(state)


def test_duplicates_change_nothing():
    once = run(event("newCall"), event("answer", users=("a",)), event("hangup", cause="normalClearing"))
    twice = run(event("newCall"), event("newCall"), event("answer", users=("a",)), event("answer", users=("b",)),
                event("hangup", cause="normalClearing"), event("hangup", cause="busy"))
    assert twice.answered_by == ("a",) and twice.cause == "normalClearing"
    assert calls.apply(once, event("hangup", cause="x"), now=T0 + timedelta(hours=1), trace_id="y") is once


def test_first_known_identity_fields_win():
    state = run(event("newCall", queue="sales"), event("hangup", queue="support", from_number=Number("e164", "+8613900000000")))
    assert state.queue == "sales" and state.from_number == "+8613812345678"


def test_hidden_or_extension_callers_are_missed_but_get_no_callback_ticket():
    hidden = run(event("newCall", from_number=Number("hidden", "")), event("hangup", cause="cancel"))
    extension = run(event("newCall", from_number=Number("extension", "201")), event("hangup", cause="cancel"))
    assert calls.is_missed(hidden) and not calls.needs_callback_ticket(hidden)
    assert calls.is_missed(extension) and not calls.needs_callback_ticket(extension)


def test_state_round_trips_through_a_dict():
    state = run(event("newCall", queue="队列"), event("answer", users=("李娜", "voicemail")), event("hangup"))
    assert CallState.from_dict(state.to_dict()) == state
