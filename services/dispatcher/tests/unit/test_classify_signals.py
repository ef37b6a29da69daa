"""Built-in signals (complaint risk, repeat contact, repeat complaint) and language detection."""
import pytest

from services.dispatcher.classify import classify, detect_language, parse_rules
from services.dispatcher.customers import CustomerHistory

NO_RULES = parse_rules({})


def _signals(text: str, rules=NO_RULES, subject: str = "", **kw) -> tuple[str, ...]:
    return classify(rules, channel="email", subject=subject, text=text, **kw).signals


@pytest.mark.parametrize("text", [
    "再不处理我就投诉到12315", "我要求退款否则投诉", "我会找媒体曝光你们", "已经联系律师了",
    "你們再不退款我就去消協投訴", "準備找律師", "不退款就给差评",
    "My lawyer will contact you", "I will file a chargeback", "I'll dispute the charge with my bank",
    "refund me now or I will go to the media", "I am going to sue you", "We are taking LEGAL ACTION",
    "Refund me or else.",
])
def test_complaint_risk_in_chinese_traditional_and_english(text):
    assert _signals(text) == ("complaint_risk",)


@pytest.mark.parametrize("text", [
    "请问发票什么时候开", "订单号 8123156789 还没发货", "I love this suede jacket", "Please refund my order, thanks",
    "the discharge summary", "",
])
def test_ordinary_tickets_carry_no_complaint_risk(text):
    assert _signals(text) == ()


def test_subject_counts_and_signals_are_tags():
    result = classify(NO_RULES, channel="email", subject="投诉：客服态度", text="")
    assert result.signals == ("complaint_risk",) and result.tags == ("complaint_risk",)


def test_complaint_lexicon_is_configurable():
    extra = parse_rules({"signals": {"complaint_words": ["黑猫", "unacceptable"], "complaint_patterns": [r"不退.{0,4}就"]}})
    assert _signals("我要上黑猫", extra) == ("complaint_risk",)
    assert _signals("This is UNACCEPTABLE", extra) == ("complaint_risk",)
    assert _signals("不退钱我就", extra) == ("complaint_risk",)
    assert _signals("This is unacceptable") == ()
    only_mine = parse_rules({"signals": {"builtin_complaint_words": False, "complaint_words": ["黑猫"]}})
    assert _signals("我要投诉", only_mine) == ()
    assert _signals("I will sue", only_mine) == ()
    assert _signals("黑猫见", only_mine) == ("complaint_risk",)


def test_repeat_contact_counts_recent_tickets_with_a_configurable_threshold():
    assert _signals("hi", history=CustomerHistory(recent_tickets=1)) == ()
    assert _signals("hi", history=CustomerHistory(recent_tickets=2)) == ("repeat_contact",)
    strict = parse_rules({"signals": {"repeat_contact_tickets": 5}})
    assert _signals("hi", strict, history=CustomerHistory(recent_tickets=4)) == ()
    assert _signals("hi", strict, history=CustomerHistory(recent_tickets=5)) == ("repeat_contact",)
    assert _signals("hi", history=None) == ()


def test_repeat_complaint_needs_an_earlier_complaint_and_this_one_complaint_like():
    history = CustomerHistory(recent_tickets=1, recent_complaints=1)
    assert _signals("我要投诉", history=history) == ("complaint_risk", "repeat_complaint")
    assert _signals("请问进度", history=history) == ()
    assert _signals("我要投诉", history=CustomerHistory(recent_tickets=1)) == ("complaint_risk",)


def test_signals_feed_rules_that_set_priority():
    rules = parse_rules({"rules": [
        {"name": "angry again", "when": {"signal": ["repeat_complaint"]}, "then": {"priority": "P1", "group": "leads"}},
        {"name": "repeat", "when": {"signal": "repeat_contact"}, "then": {"priority": "P2"}},
    ]})
    again = classify(rules, channel="chat", subject="", text="lawyer", history=CustomerHistory(3, 1))
    assert (again.priority, again.group) == ("P1", "leads")
    assert again.tags == ("complaint_risk", "repeat_contact", "repeat_complaint")
    assert classify(rules, channel="chat", subject="", text="hi", history=CustomerHistory(3, 0)).priority == "P2"


@pytest.mark.parametrize("text,language", [
    ("你好，我的订单有问题", "zh"),
    ("Re: 退款", "zh"),
    ("APP闪退了 error 500", "zh"),
    ("VPN 连不上", "zh"),
    ("您好，我無法登入帳號，請協助處理", "zh"),   # Traditional
    ("請問", "zh"),
    ("Hello, my order is late. Thanks, 李娜", "en"),
    ("Dear support, my name is 王小明 and I cannot log in to the app", "en"),
    ("请看截图 https://example.com/a/very/long/path/with/many/words?x=one&y=two 谢谢", "zh"),
    ("发票抬头写错了，请改成 finance.team@example-company.com 的公司名", "zh"),
    ("好的\n\n> On Monday you wrote:\n> Please send us the invoice number and the order date\n> Regards, support", "zh"),
    ("", "en"),
    ("12345", "en"),
])
def test_language_detection_for_short_mixed_and_traditional_text(text, language):
    assert detect_language(text) == language
