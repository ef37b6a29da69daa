from datetime import datetime, timedelta, timezone

import pytest

from services.intake_phone import calls
from services.intake_phone.calls import CallEvent, CallState
from services.intake_phone.phone_numbers import Number
from services.intake_phone.policy import LinePolicy

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=timezone.utc)
CALLER = Number("e164", "+8613812345678")
HOTLINE = Number("e164", "+861088888888")
LINE = LinePolicy("hotline")


def event(kind, **over):
    fields = dict(kind=kind, call_id="c-1", direction="in", from_number=CALLER, to_number=HOTLINE)
    fields.update(over)
    return CallEvent(**fields)


def run(*events, start=T0):
    state = None
    for i, e in enumerate(events):
        state = calls.apply(state, e, now=start + timedelta(seconds=10 * i), trace_id=f"trace-{i}")
    return state


def kind(state, line=LINE):
    return calls.ticket_kind(state, line)


def test_answered_call_is_not_missed_and_waits_for_its_wrap_up():
    state = run(event("newCall"), event("answer", users=("李娜",)), event("hangup", cause="normalClearing"))
    assert state.answered_by == ("李娜",) and state.ended_at == T0 + timedelta(seconds=20)
    assert not calls.is_missed(state)
    assert kind(state) == (None, "answered_without_wrap_up")


def test_hangup_without_answer_is_a_callback_with_its_fields():
    state = run(event("newCall", queue="sales"), event("hangup", cause="cancel"))
    assert calls.is_missed(state) and kind(state) == ("callback", "")
    fields = calls.ticket_fields(state, "callback", LINE)
    assert fields["customer"] == {"name": "", "phone": "+8613812345678", "verified": ["phone"]}
    assert fields["subject"] == "未接来电 / Missed call from +86 138 1234 5678"
    assert fields["source"] == {"call_id": "c-1", "to": "+861088888888", "queue": "sales", "line": "hotline",
                                "category": "callback", "callback": "true", "cause": "cancel"}
    assert "请回电" in fields["text"] and "Please call back" in fields["text"]
    assert fields["received_at"] == T0 + timedelta(seconds=10)


def test_forwarded_call_is_not_missed():
    state = run(event("newCall"), event("hangup", cause="forwarded"))
    assert not calls.is_missed(state) and kind(state) == (None, "forwarded")


def test_answered_by_voicemail_is_a_voicemail_once_it_ended():
    answered = run(event("newCall"), event("answer", users=("voicemail",)))
    assert kind(answered) == (None, "in_progress")  # the caller is still speaking
    state = calls.apply(answered, event("hangup", cause="normalClearing"), now=T0 + timedelta(minutes=1), trace_id="x")
    assert calls.is_missed(state) and kind(state) == ("voicemail", "")
    by_number = run(event("newCall"), event("answer", answering_number="VoiceMail"), event("hangup"))
    assert kind(by_number) == ("voicemail", "")


def test_voicemail_event_with_transcript_is_enough_for_the_ticket():
    state = run(event("voicemail", direction=None, transcript="请回电", recording_url="https://x.example/1.wav"))
    assert state.direction == "in" and state.voicemail and kind(state) == ("voicemail", "")
    fields = calls.ticket_fields(state, "voicemail", LINE)
    assert fields["text"].startswith("请回电\n\n语音留言：+86 138 1234 5678")
    assert fields["text"].endswith("录音 / Recording: https://x.example/1.wav")
    assert fields["source"]["recording_url"] == "https://x.example/1.wav"
    assert fields["source"]["category"] == "voicemail" and fields["source"]["callback"] == "true"


def test_voicemail_after_an_unanswered_hangup_turns_the_missed_call_into_a_voicemail():
    missed = run(event("newCall"), event("hangup", cause="noAnswer"))
    assert kind(missed) == ("callback", "")
    state = calls.apply(missed, event("voicemail", transcript="在吗"), now=T0 + timedelta(minutes=2), trace_id="x")
    assert state.voicemail and state.answered_at is None and kind(state) == ("voicemail", "")
    message = calls.voicemail_message_fields(state, LINE)
    assert message["message_id"] == calls.message_id("voicemail", "c-1") and message["text"].startswith("在吗\n")
    assert message["received_at"] == T0 + timedelta(minutes=2)


def test_voicemail_never_overrides_a_person_who_answered():
    state = run(event("newCall"), event("answer", users=("a",)), event("voicemail", transcript="x"))
    assert not state.voicemail and state.transcript == "x"


def test_wrap_up_makes_an_answered_call_a_ticket_resolved_or_open():
    state = run(event("newCall"), event("answer", users=("李娜",)), event("hangup", cause="normalClearing"),
                event("wrapUp", direction=None, from_number=None, wrap_up_code="resolved", notes="已告知", agent="li.na"))
    assert kind(state) == ("call", "")
    resolved = calls.ticket_fields(state, "call", LINE, "resolved")
    assert resolved["source"]["resolved_on_first_contact"] == "true" and resolved["source"]["agent_id"] == "li.na"
    assert resolved["source"]["callback"] == "false" and resolved["source"]["category"] == "call"
    assert resolved["text"].startswith("已告知\n") and "通话中已解决" in resolved["text"]
    assert resolved["received_at"] == T0 + timedelta(seconds=20)  # the call's end, not the wrap-up
    left_open = calls.ticket_fields(state, "call", LINE, "open")
    assert left_open["source"]["resolved_on_first_contact"] == "false" and "needs follow-up" in left_open["text"]


def test_wrap_up_fields_on_the_hangup_count_and_stand_in_for_a_lost_answer():
    state = run(event("newCall"), event("hangup", cause="normalClearing", wrap_up_code="follow_up", notes="n"))
    assert state.answered_at == T0 + timedelta(seconds=10) and kind(state) == ("call", "")


def test_wrap_up_after_a_missed_call_changes_nothing_about_the_outcome():
    state = run(event("newCall"), event("hangup", cause="cancel"), event("wrapUp", wrap_up_code="resolved"))
    assert state.answered_at is None and kind(state) == ("callback", "")


def test_line_policy_can_ignore_each_kind():
    quiet = LinePolicy("quiet", missed="ignore", voicemail="ignore", answered="ignore")
    missed = run(event("hangup", cause="cancel"))
    voicemail = run(event("voicemail", transcript="t"))
    answered = run(event("answer"), event("wrapUp", wrap_up_code="resolved"))
    assert [kind(s, quiet) for s in (missed, voicemail, answered)] == [
        (None, "missed_ignored_by_policy"), (None, "voicemail_ignored_by_policy"), (None, "answered_ignored_by_policy")]
    assert [kind(s)[0] for s in (missed, voicemail, answered)] == ["callback", "voicemail", "call"]


def test_outbound_calls_are_never_tickets():
    state = run(event("newCall", direction="out"), event("hangup", cause="noAnswer"))
    assert not calls.is_missed(state) and kind(state) == (None, "outbound")
    wrapped = run(event("newCall", direction="out"), event("answer"), event("wrapUp", wrap_up_code="resolved"))
    assert kind(wrapped) == (None, "outbound")


def test_hangup_before_newcall_is_judged_with_what_it_carries():
    state = run(event("hangup", cause="noAnswer"), event("newCall"))
    assert state.ended_at == T0 and state.rang_at == T0 + timedelta(seconds=10)
    assert state.trace_id == "trace-0"  # the first event seen names the trace
    assert calls.is_missed(state)


def test_direction_learned_from_a_late_newcall_makes_the_call_missed_then():
    hangup_only = run(event("hangup", direction=None, cause="cancel"))
    assert kind(hangup_only) == (None, "direction_unknown")  # might be outbound
    later = calls.apply(hangup_only, event("newCall"), now=T0 + timedelta(seconds=30), trace_id="x")
    assert kind(later) == ("callback", "")


def test_answer_after_hangup_is_ignored():
    state = run(event("newCall"), event("hangup", cause="cancel"), event("answer", users=("li.na",)))
    assert state.answered_at is None and calls.is_missed(state)


def test_duplicates_change_nothing():
    once = run(event("newCall"), event("answer", users=("a",)), event("hangup", cause="normalClearing"),
               event("wrapUp", wrap_up_code="x"), event("voicemail", transcript="t"))
    twice = run(event("newCall"), event("newCall"), event("answer", users=("a",)), event("answer", users=("b",)),
                event("hangup", cause="normalClearing"), event("hangup", cause="busy"),
                event("wrapUp", wrap_up_code="x"), event("wrapUp", wrap_up_code="y"),
                event("voicemail", transcript="t"), event("voicemail", transcript="u"))
    assert twice.answered_by == ("a",) and twice.cause == "normalClearing"
    assert (twice.wrap_up_code, twice.transcript) == ("x", "t")
    for again in (event("hangup", cause="x"), event("wrapUp", wrap_up_code="z"), event("voicemail", transcript="v")):
        assert calls.apply(once, again, now=T0 + timedelta(hours=1), trace_id="y") is once


def test_first_known_identity_fields_win():
    state = run(event("newCall", queue="sales"), event("hangup", queue="support", from_number=Number("e164", "+8613900000000")))
    assert state.queue == "sales" and state.from_number == "+8613812345678"


@pytest.mark.parametrize("caller", [Number("hidden", ""), Number("extension", "201")])
def test_hidden_or_extension_callers_are_missed_but_get_no_callback_ticket(caller):
    state = run(event("newCall", from_number=caller), event("hangup", cause="cancel"))
    assert calls.is_missed(state) and kind(state) == (None, f"missed_without_number:{caller.kind}")


def test_linking_keeps_the_first_ticket_and_announcements_accumulate():
    state = run(event("hangup", cause="cancel"))
    linked = calls.linked(state, "TM-1", folded=True, ticket_trace_id="t1")
    assert calls.linked(linked, "TM-2", folded=False, ticket_trace_id="t2") is linked
    marked = calls.with_announced(linked, calls.ANNOUNCED_TICKET)
    assert calls.with_announced(marked, calls.ANNOUNCED_TICKET) is marked
    assert calls.with_announced(marked, calls.ANNOUNCED_VOICEMAIL).announced == ("ticket", "voicemail")


def test_folded_call_is_a_message_saying_the_customer_tried_again():
    state = run(event("newCall", queue="sales"), event("hangup", cause="busy"))
    message = calls.folded_message_fields(state, "callback", LINE)
    assert message["message_id"] == calls.message_id("call", "c-1") and len(message["message_id"]) <= 128
    assert message["text"].startswith("再次未接来电：+86 138 1234 5678") and "Another missed call" in message["text"]
    assert message["source"]["folded"] == "true" and message["source"]["category"] == "callback"


def test_state_round_trips_through_a_dict():
    state = run(event("newCall", queue="队列"), event("answer", users=("李娜", "voicemail")), event("hangup"),
                event("voicemail", transcript="留言", recording_url="https://x.example/a.wav"),
                event("wrapUp", wrap_up_code="resolved", notes="n", agent="li.na"))
    state = calls.with_announced(calls.linked(state, "TM-9", folded=False, ticket_trace_id="tr"), "ticket")
    assert CallState.from_dict(state.to_dict()) == state


def test_state_written_by_the_previous_version_still_reads():
    old = {"call_id": "c", "trace_id": "t", "direction": "in", "from_kind": "e164", "from_number": "+8613812345678",
           "to_kind": "", "to_number": "", "queue": "", "rang_at": None, "answered_at": None, "answered_by": [],
           "voicemail": False, "ended_at": T0.isoformat(), "cause": "cancel"}
    state = CallState.from_dict(old)
    assert state.ended_at == T0 and state.announced == () and state.ticket_id == ""
