import pytest

from services.intake_chat import validation
from services.intake_chat.validation import InvalidInput, Profile

VISITOR = "v_0123456789abcdef"


def message(**over):
    data = {"visitor_id": VISITOR, "client_message_id": "m-1", "text": "你好，我的订单没有到"}
    data.update(over)
    return data


def test_valid_message_with_profile():
    parsed = validation.api_message(message(name=" 张伟 ", email="zhang.wei@example.com", language="zh-CN"))
    assert parsed.text == "你好，我的订单没有到"
    assert parsed.profile == Profile(name="张伟", email="zhang.wei@example.com", phone="", language="zh-CN")


def test_text_limits_count_characters_not_bytes():
    assert len(validation.message_text("好" * 5000)) == 5000
    with pytest.raises(InvalidInput) as info:
        validation.message_text("好" * 5001)
    assert info.value.code == "text_too_long"


@pytest.mark.parametrize("text, code", [("", "empty_text"), ("   \n\t ", "empty_text"), (None, "invalid_text"),
                                        (42, "invalid_text"), ("\x00\x07", "empty_text")])
def test_empty_or_non_string_text_is_rejected(text, code):
    with pytest.raises(InvalidInput) as info:
        validation.message_text(text)
    assert info.value.code == code


def test_text_keeps_newlines_and_drops_control_characters():
    assert validation.message_text(" a\r\nb\x1b[31mc\t ") == "a\nb[31mc"


@pytest.mark.parametrize("session", ["short", "x" * 65, "v_0123456789abcdef!", "../../etc/passwd-aaaa", 123, None])
def test_session_format(session):
    with pytest.raises(InvalidInput) as info:
        validation.session(session)
    assert info.value.code == "invalid_session"


@pytest.mark.parametrize("cmid", ["", "a b", "x" * 65, None, ["m"]])
def test_client_message_id_format(cmid):
    with pytest.raises(InvalidInput) as info:
        validation.api_message(message(client_message_id=cmid))
    assert info.value.code == "invalid_client_message_id"


def test_chat_message_ids_cannot_take_a_status_page_replys_id():
    """A status-page reply on a chat ticket is message ``sp-<id>`` of that ticket: a chat message
    with the same id would be the same event, and one of the two would be dropped as a repeat."""
    with pytest.raises(InvalidInput) as info:
        validation.api_message(message(client_message_id="sp-m1"))
    assert info.value.code == "invalid_client_message_id"
    with pytest.raises(InvalidInput):
        validation.chat_message_id("sp-" + "a" * 20)
    assert validation.chat_message_id("m_sp-1") == "m_sp-1"
    assert validation.client_message_id("sp-ok") == "sp-ok"  # the status page's own ids stay valid


@pytest.mark.parametrize("field, value, code", [
    ("email", "not-an-email", "invalid_email"), ("email", 5, "invalid_email"), ("name", "n" * 201, "invalid_name"),
    ("phone", "call me", "invalid_phone"), ("language", "中文", "invalid_language"),
])
def test_profile_fields_are_checked(field, value, code):
    with pytest.raises(InvalidInput) as info:
        validation.api_message(message(**{field: value}))
    assert info.value.code == code


@pytest.mark.parametrize("origin, allowed", [
    (None, True), ("http://chat.example.com:8081", True), ("http://127.0.0.1:5173", True),
    ("http://localhost:3000", True), ("http://localhost", True), ("https://evil.example", False),
    ("http://localhost.evil.example", False), ("http://127.0.0.1:80x", False), ("https://shop.example.com", True),
])
def test_origin_rules(origin, allowed):
    patterns = ("http://127.0.0.1:*", "http://localhost:*", "https://shop.example.com")
    assert validation.origin_allowed(origin, "chat.example.com:8081", patterns) is allowed


def test_star_allows_every_origin():
    assert validation.origin_allowed("https://anything.example", "chat:8081", ("*",))


@pytest.mark.parametrize("requested, header, expected", [
    ("en", "zh-CN,zh;q=0.9", "en"), ("zh", "en-US", "zh"), (None, "en-US,en;q=0.9,zh;q=0.8", "en"),
    (None, "fr-FR,zh-TW;q=0.5,en;q=0.4", "zh"), (None, "en;q=0.2,zh;q=0.9", "zh"), (None, None, "zh"),
    ("de", "de-DE", "zh"), (None, "en;q=0", "zh"),
])
def test_language_from_query_then_accept_language(requested, header, expected):
    assert validation.pick_language(requested, header) == expected
