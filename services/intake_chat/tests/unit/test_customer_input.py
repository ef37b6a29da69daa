import pytest

from shared import events as ev

from services.intake_chat import customer_input
from services.intake_chat.customer_input import InvalidInput, contact_hash, lookup, survey_answer, ticket_number

SECRET = b"unit-test-customer-link-secret"


@pytest.mark.parametrize("raw", ["TM-10001", "tm-10001", "#TM-10001", " TM 10001 ", "10001", "TM10001"])
def test_ticket_numbers_are_read_however_the_customer_types_them(raw):
    assert ticket_number(raw) == "TM-10001"


@pytest.mark.parametrize("raw", ["", "TM-", "abc", "TM-1x", "1" * 40, None, 10001])
def test_anything_else_is_no_ticket_number(raw):
    assert ticket_number(raw) is None


def test_an_address_matches_in_any_case_and_a_local_phone_matches_its_e164_form():
    assert contact_hash(SECRET, " Ann@Example.COM ", "CN") == contact_hash(SECRET, "ann@example.com", "CN")
    e164 = contact_hash(SECRET, "+8613812345678", "CN")
    assert e164 and contact_hash(SECRET, "138 1234 5678", "CN") == e164
    assert contact_hash(SECRET, "0086 138-1234-5678", "CN") == e164
    assert contact_hash(SECRET, "138 1234 5678", "US") != e164


def test_hashes_depend_on_the_secret_and_reveal_nothing_typed():
    hashed = contact_hash(SECRET, "ann@example.com", "CN")
    assert hashed != contact_hash(b"another-secret-of-enough-length", "ann@example.com", "CN")
    assert "ann" not in hashed and len(hashed) == 32


@pytest.mark.parametrize("raw", ["not an address", "12", "@", "ann@", ""])
def test_what_is_neither_an_address_nor_a_phone_hashes_to_nothing(raw):
    assert contact_hash(SECRET, raw, "CN") is None


def test_an_events_customer_contributes_its_email_and_phone():
    customer = ev.Customer(name="Ann", email="ann@example.com", phone="+8613812345678")
    assert customer_input.contact_hashes(SECRET, customer, "CN") == [
        contact_hash(SECRET, "ann@example.com", "CN"), contact_hash(SECRET, "+8613812345678", "CN")]
    assert customer_input.contact_hashes(SECRET, ev.Customer(name="Anonymous"), "CN") == []


def test_a_lookup_never_raises_on_junk():
    found = lookup({"ticket": ["x"], "contact": 5}, secret=SECRET, region="CN")
    assert found == customer_input.Lookup(None, None)
    found = lookup({"ticket": "TM-10001", "contact": "ann@example.com"}, secret=SECRET, region="CN")
    assert found.ticket_id == "TM-10001" and found.contact_hash == contact_hash(SECRET, "ann@example.com", "CN")


def test_a_survey_answer_is_a_score_from_1_to_5_and_a_short_comment():
    assert survey_answer({"score": "5", "comment": " great\r\nthanks\x07 "}) == customer_input.SurveyAnswer(5, "great\nthanks")
    assert survey_answer({"score": 1}) == customer_input.SurveyAnswer(1, "")
    for bad in ({}, {"score": "0"}, {"score": "6"}, {"score": "4.5"}, {"score": True}, {"score": ["3"]}):
        with pytest.raises(InvalidInput) as err:
            survey_answer(bad)
        assert err.value.code == "invalid_score"
    with pytest.raises(InvalidInput) as err:
        survey_answer({"score": "3", "comment": "字" * 2001})
    assert err.value.code == "comment_too_long"


def test_a_reply_has_the_chat_messages_limits():
    assert customer_input.reply({"client_message_id": "c-1", "text": " hi "}) == customer_input.Reply("c-1", "hi")
    with pytest.raises(InvalidInput) as err:
        customer_input.reply({"client_message_id": "c-1", "text": "x" * 5001})
    assert err.value.code == "text_too_long"
    with pytest.raises(InvalidInput) as err:
        customer_input.reply({"client_message_id": "bad id!", "text": "hi"})
    assert err.value.code == "invalid_client_message_id"


def test_only_verified_identifiers_count_when_the_channel_says_which_it_verified():
    typed = ev.Customer(name="Ann", email="victim@example.com", chat_visitor_id="v_0123456789abcdef",
                        verified=["chat_visitor"])
    assert customer_input.contact_hashes(SECRET, typed, "CN") == []
    caller = ev.Customer(phone="+8613812345678", email="typed@example.com", verified=["phone"])
    assert customer_input.contact_hashes(SECRET, caller, "CN") == [contact_hash(SECRET, "+8613812345678", "CN")]
