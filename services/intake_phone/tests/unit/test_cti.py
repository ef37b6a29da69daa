import pytest

from services.intake_phone.cti import CtiError, parse_cti
from services.intake_phone.phone_numbers import Number


def test_json_fields_with_numbers_as_integers():
    event = parse_cti({"event": "newCall", "from": 13812345678, "to": "010 8888 8888", "direction": "in",
                       "callId": "abc", "user": "李娜", "queue": "sales"}, "CN")
    assert event.from_number == Number("e164", "+8613812345678")
    assert event.to_number == Number("e164", "+861088888888")
    assert event.users == ("李娜",) and event.queue == "sales" and event.call_id == "abc"


def test_form_lists_and_call_id_alias():
    event = parse_cti({"event": ["answer"], "call_id": ["x-1"], "user[]": ["Alice", "Bob"], "answeringNumber": ["voicemail"]}, "CN")
    assert event.call_id == "x-1" and event.users == ("Alice", "Bob") and event.by_voicemail
    assert event.from_number is None and event.direction is None


def test_zammad_documented_payloads_parse():
    # The examples of Zammad's Generic CTI docs (German numbers, parsed with a DE default region).
    hangup = parse_cti({"event": "hangup", "from": "493023125741", "to": "492214710334", "direction": "out",
                        "callId": "f4ebd2be-7b9a-4d58-94c2-eb06a3c2ce76", "cause": "cancel"}, "DE")
    assert (hangup.kind, hangup.direction, hangup.cause) == ("hangup", "out", "cancel")
    assert hangup.to_number.kind == "e164" and hangup.to_number.value.startswith("+49")
    anonymous = parse_cti({"event": "newCall", "from": "anonymous", "to": "492214710334", "direction": "in",
                           "callId": "123456", "user[]": ["Alice", "Bob"]}, "DE")
    assert anonymous.from_number == Number("hidden", "") and anonymous.users == ("Alice", "Bob")


def test_country_code_without_plus_is_understood_for_cn():
    event = parse_cti({"event": "hangup", "callId": "c", "from": "8613812345678"}, "CN")
    assert event.from_number == Number("e164", "+8613812345678")


def test_wrap_up_extension_on_its_own_event_or_on_the_hangup():
    wrap = parse_cti({"event": "wrapUp", "callId": "c", "wrapUpCode": "resolved", "notes": " 已解决 ", "agent": "li.na"}, "CN")
    assert (wrap.kind, wrap.wrap_up_code, wrap.notes, wrap.agent) == ("wrapUp", "resolved", "已解决", "li.na")
    assert wrap.has_wrap_up and wrap.direction is None
    on_hangup = parse_cti({"event": "hangup", "callId": "c", "wrap_up_code": "follow_up", "notes": "x"}, "CN")
    assert on_hangup.has_wrap_up and on_hangup.wrap_up_code == "follow_up"
    assert not parse_cti({"event": "hangup", "callId": "c"}, "CN").has_wrap_up


def test_voicemail_extension_fields():
    vm = parse_cti({"event": "voicemail", "callId": "c", "recordingUrl": "https://pbx.example.com/v/1.wav",
                    "transcript": "请回电\n谢谢"}, "CN")
    assert vm.recording_url == "https://pbx.example.com/v/1.wav" and vm.transcript == "请回电\n谢谢"
    assert vm.has_voicemail_content
    snake = parse_cti({"event": "hangup", "callId": "c", "recording_url": "http://10.0.0.5/a.mp3"}, "CN")
    assert snake.recording_url == "http://10.0.0.5/a.mp3"


def test_fields_nobody_defined_are_ignored():
    event = parse_cti({"event": "hangup", "callId": "c", "x-pbx-trace": {"deep": [1, 2]}, "duration": 42}, "CN")
    assert event.kind == "hangup"


@pytest.mark.parametrize("fields, code", [
    ({"event": "ring", "callId": "1", "direction": "in"}, "invalid_event"),
    ({"event": "NEWCALL", "callId": "1", "direction": "in"}, "invalid_event"),
    ({"event": "newCall", "direction": "in"}, "missing_call_id"),
    ({"event": "newCall", "callId": "x" * 251, "direction": "in"}, "invalid_field"),
    ({"event": "newCall", "callId": "1"}, "invalid_direction"),
    ({"event": "hangup", "callId": "1", "direction": "sideways"}, "invalid_direction"),
    ({"event": "voicemail", "callId": "1", "direction": "out"}, "invalid_direction"),
    ({"event": "newCall", "callId": "1", "direction": "in", "from": "not a number"}, "invalid_number"),
    ({"event": "newCall", "callId": "1", "direction": "in", "from": "+999 1234 5678"}, "invalid_number"),
    ({"event": "newCall", "callId": "1", "direction": "in", "from": {"n": 1}}, "invalid_field"),
    ({"event": ["newCall", "hangup"], "callId": "1", "direction": "in"}, "invalid_field"),
    ({"event": "hangup", "callId": "1", "cause": True}, "invalid_field"),
    ({"event": "hangup", "callId": "1\x00"}, "invalid_field"),
    ({"event": "voicemail", "callId": "1", "recordingUrl": "javascript:alert(1)"}, "invalid_field"),
    ({"event": "voicemail", "callId": "1", "recordingUrl": "https://"}, "invalid_field"),
    ({"event": "voicemail", "callId": "1", "transcript": "字" * 50_001}, "invalid_field"),
    ({"event": "wrapUp", "callId": "1", "notes": "x" * 10_001}, "invalid_field"),
    ({"event": "wrapUp", "callId": "1", "agent": "li na"}, "invalid_field"),
    ({"event": "newCall", "callId": "1", "direction": "in", "user": ["x"] * 21}, "invalid_field"),
])
def test_unusable_fields_raise_with_a_code(fields, code):
    with pytest.raises(CtiError) as info:
        parse_cti(fields, "CN")
    assert info.value.code == code and info.value.message
