from datetime import datetime, timezone

from shared import events as ev
from shared.intake_ledger import stable_event_id

from services.intake_chat import conversation
from services.intake_chat.validation import Profile

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=timezone.utc)


def test_subject_is_the_first_80_characters_on_one_line():
    assert conversation.subject_from_text("我的订单\n没有到") == "我的订单 没有到"
    long = conversation.subject_from_text("退款" * 100)
    assert len(long) == 80 and long.endswith("…")


def test_opening_event_is_a_valid_ticket_received_with_a_stable_id():
    body = conversation.opening_event(ticket_id="TM-10001", trace_id="t1", visitor_id="v_0123456789abcdef",
                                      client_message_id="m-1", text="Where is my parcel?",
                                      profile=Profile(name="Ann", language="en"), now=NOW)
    parsed = ev.parse_event("intake_chat", "ticket_received", body)
    assert parsed.event_id == stable_event_id("ticket_received", "TM-10001")
    assert parsed.channel == "chat" and parsed.customer.chat_visitor_id == "v_0123456789abcdef"
    assert parsed.customer.email is None and parsed.subject == "Where is my parcel?"


def test_follow_up_event_uses_the_client_message_id():
    body = conversation.follow_up_event(ticket_id="TM-10001", trace_id="t1", visitor_id="v_0123456789abcdef",
                                        client_message_id="m-2", text="还在吗？", profile=Profile(), now=NOW)
    parsed = ev.parse_event("intake_chat", "message_received", body)
    assert parsed.message_id == "m-2"
    assert parsed.event_id == stable_event_id("message_received", "TM-10001", "m-2")
