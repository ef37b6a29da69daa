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


@pytest.mark.parametrize("fields, code", [
    ({"event": "ring", "callId": "1", "direction": "in"}, "invalid_event"),
    ({"event": "newCall", "direction": "in"}, "missing_call_id"),
    ({"event": "newCall", "callId": "x" * 251, "direction": "in"}, "invalid_field"),
    ({"event": "newCall", "callId": "1"}, "invalid_direction"),
    ({"event": "hangup", "callId": "1", "direction": "sideways"}, "invalid_direction"),
    ({"event": "newCall", "callId": "1", "direction": "in", "from": "not a number"}, "invalid_number"),
    ({"event": "newCall", "callId": "1", "direction": "in", "from": {"n": 1}}, "invalid_field"),
    ({"event": ["newCall", "hangup"], "callId": "1", "direction": "in"}, "invalid_field"),
])
def test_unusable_fields_raise_with_a_code(fields, code):
    with pytest.raises(CtiError) as info:
        parse_cti(fields, "CN")
    assert info.value.code == code
