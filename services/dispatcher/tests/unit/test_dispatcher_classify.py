"""Classification rules: Chinese and English keywords, defaults, validation of the rules file."""
from pathlib import Path

import pytest

from services.dispatcher.classify import RulesError, classify, detect_language, load_rules, parse_rules

DEFAULT_RULES = Path(__file__).resolve().parents[4] / "deploy" / "config" / "routing.yaml"


@pytest.fixture(scope="module")
def rules():
    return load_rules(DEFAULT_RULES)


@pytest.mark.parametrize("subject,text,skill", [
    ("申请退款", "上个月多扣了钱", "billing"),
    ("", "请帮我开一张发票", "billing"),
    ("Question about my INVOICE", "", "billing"),
    ("Refunds?", "", "billing"),
    ("", "App 崩溃了，一直闪退", "technical"),
    ("无法登录", "", "technical"),
    ("", "I Cannot  Log In since the update", "technical"),
    ("", "Got an ERROR 500 when saving", "technical"),
])
def test_keywords_pick_skills_in_both_languages_case_insensitively(rules, subject, text, skill):
    result = classify(rules, channel="email", subject=subject, text=text)
    assert result.required_skills == (skill,)
    assert result.priority == "P3"


def test_latin_keywords_match_at_word_start_only(rules):
    result = classify(rules, channel="chat", subject="", text="the discharge summary, debug log attached")
    assert result.required_skills == ("general",) and result.matched_rules == ()


def test_complaint_signals_tag_and_raise_priority_while_skills_accumulate(rules):
    result = classify(rules, channel="email", subject="退款问题", text="再不处理我就投诉到12315")
    assert result.priority == "P1"
    assert "complaint" in result.tags
    assert result.required_skills == ("billing",)

    english = classify(rules, channel="chat", subject="", text="My lawyer will contact you")
    assert english.priority == "P1" and english.tags == ("complaint", "complaint_risk") and english.required_skills == ("general",)


def test_defaults_when_nothing_matches(rules):
    result = classify(rules, channel="email", subject="你好", text="想咨询一下营业时间")
    assert (result.required_skills, result.priority, result.tags) == (("general",), "P3", ())


def test_phone_callback_is_p2_unless_a_rule_is_more_urgent(rules):
    missed = {"call_id": "c-1", "to": "+861088886666", "queue": "", "cause": "no_answer"}
    callback = classify(rules, channel="phone", subject="未接来电 / Missed call", text="", source=missed)
    assert callback.priority == "P2" and "callback" in callback.tags
    not_a_callback = classify(rules, channel="phone", subject="Call", text="", source={"callback": "false"})
    assert not_a_callback.priority == "P3" and not_a_callback.tags == ()
    angry = classify(rules, channel="phone", subject="", text="投诉", source=missed)
    assert angry.priority == "P1"
    assert classify(rules, channel="email", subject="", text="", source={"callback": "true"}).priority == "P3"


def test_language_from_customer_wins_else_detected():
    assert detect_language("你好，我的订单有问题") == "zh"
    assert detect_language("Re: 退款") == "zh"
    assert detect_language("Hello, my order is late. Thanks, 李娜") == "en"
    assert detect_language("") == "en"
    rules = parse_rules({})
    assert classify(rules, channel="chat", subject="", text="你好", customer_language="en-US").language == "en"
    assert classify(rules, channel="chat", subject="", text="hello", customer_language="zh-CN").language == "zh"
    assert classify(rules, channel="chat", subject="", text="您好，请问", customer_language=None).language == "zh"


def test_channel_condition_and_stop():
    rules = parse_rules({"rules": [
        {"name": "vip chat", "when": {"channel": "chat", "keywords": ["vip"]}, "then": {"skills": ["vip"]}, "stop": True},
        {"name": "everything", "then": {"tags": ["seen"]}},
    ]})
    chat = classify(rules, channel="chat", subject="", text="VIP customer here")
    assert chat.required_skills == ("vip",) and chat.tags == ()
    email = classify(rules, channel="email", subject="", text="VIP customer here")
    assert email.required_skills == ("general",) and email.tags == ("seen",)


@pytest.mark.parametrize("data,message", [
    ({"rules": [{"name": "billing", "then": {"priority": "P9"}}]}, "rule 1 'billing': then.priority"),
    ({"rules": [{"name": "ok", "then": {}}, {"name": "tech", "when": {"keywords": []}, "then": {}}]},
     "rule 2 'tech': when.keywords"),
    ({"rules": [{"name": "x", "when": {"channel": ["fax"]}, "then": {}}]}, "rule 1 'x': when.channel"),
    ({"rules": [{"name": "x", "then": {}, "unless": 1}]}, "rule 1 'x': unless: Extra inputs"),
    ({"rules": [{"then": {}}]}, "rule 1: name: Field required"),
    ({"rules": [{"name": "a", "then": {}}, {"name": "a", "then": {}}]}, "repeated: a"),
    ({"defaults": {"priority": "urgent"}}, "defaults.priority"),
    (["not", "a", "mapping"], "expected a mapping"),
])
def test_bad_rules_fail_with_a_message_naming_the_rule(data, message):
    with pytest.raises(RulesError, match="routing rules") as info:
        parse_rules(data)
    assert message in str(info.value)


def test_bad_yaml_file_names_the_file(tmp_path):
    path = tmp_path / "routing.yaml"
    path.write_text("rules:\n  - name: [unclosed\n", encoding="utf-8")
    with pytest.raises(RulesError, match=f"routing rules {path} is not valid YAML"):
        load_rules(path)
    with pytest.raises(RulesError, match="cannot read routing rules"):
        load_rules(tmp_path / "missing.yaml")
