"""Rule conditions (mailbox, queue, sender, domain, tier, language, signal, regex) and actions
(category, group, preferred skills), and what a bad rules file says."""
import pytest

from services.dispatcher.classify import RulesError, classify, parse_rules


def _one(when: dict, **then):
    return parse_rules({"rules": [{"name": "r", "when": when, "then": then or {"tags": ["hit"]}}]})


def _hit(rules, **ticket) -> bool:
    ticket = {"channel": "email", "subject": "", "text": "", **ticket}
    return classify(rules, **ticket).matched_rules == ("r",)


def test_mailbox_matches_the_email_source_mailbox():
    rules = _one({"mailbox": ["VIP", "billing"]})
    assert _hit(rules, source={"mailbox": "vip", "uid": "7"})
    assert _hit(rules, source={"mailbox": "billing"})
    assert not _hit(rules, source={"mailbox": "support"})
    assert not _hit(rules, source={})


def test_queue_matches_the_phone_queue_or_line():
    rules = _one({"queue": "hotline-vip"})
    assert _hit(rules, channel="phone", source={"call_id": "c", "queue": "hotline-vip", "callback": "false"})
    assert _hit(rules, channel="phone", source={"line": "Hotline-VIP", "callback": "false"})
    assert not _hit(rules, channel="phone", source={"queue": "", "callback": "false"})


def test_sender_is_the_exact_address_and_domain_includes_subdomains():
    by_sender = _one({"sender": ["Boss@Example.com"]})
    assert _hit(by_sender, sender="boss@example.com")
    assert _hit(by_sender, sender="The Boss <BOSS@example.com>")
    assert not _hit(by_sender, sender="boss@example.com.cn")
    assert not _hit(by_sender, sender=None)

    by_domain = _one({"domain": ["partner.example.com", "@corp.cn"]})
    assert _hit(by_domain, sender="li@partner.example.com")
    assert _hit(by_domain, sender="li@cn.partner.example.com")
    assert _hit(by_domain, sender="wang@CORP.cn")
    assert not _hit(by_domain, sender="li@evilpartner.example.com")  # a suffix is not a subdomain
    assert not _hit(by_domain, sender="li@example.com")
    assert not _hit(by_domain, sender="+8613800000000")


def test_tier_without_a_tier_is_standard():
    vip = _one({"tier": "vip"})
    assert _hit(vip, customer_tier="VIP") and not _hit(vip, customer_tier=None)
    standard = _one({"tier": ["standard"]})
    assert _hit(standard, customer_tier=None) and not _hit(standard, customer_tier="vip")


def test_language_is_the_given_or_detected_one():
    rules = _one({"language": ["zh-CN"]})
    assert _hit(rules, text="我的订单还没到")
    assert _hit(rules, text="hello", customer_language="zh_Hans")
    assert not _hit(rules, text="where is my order")


def test_signal_condition_lets_a_rule_act_on_complaint_risk():
    rules = _one({"signal": "complaint_risk"}, priority="P1", group="escalations")
    result = classify(rules, channel="chat", subject="", text="我要投诉你们")
    assert (result.priority, result.group, result.matched_rules) == ("P1", "escalations", ("r",))
    assert not _hit(rules, text="谢谢")


def test_regex_is_case_insensitive_sees_folded_text_and_respects_fields():
    rules = _one({"regex": [r"订单号?\s*\d{8,}", r"\bORD-\d{4}\b"], "fields": "subject"})
    assert _hit(rules, subject="关于订单号 20240501 的问题")
    assert _hit(rules, subject="ord-1234 late")
    assert _hit(rules, subject="ＯＲＤ－１２３４")  # full-width, as some IMEs type it
    assert not _hit(rules, text="ord-1234 late")    # text is not a field of this rule
    assert not _hit(rules, subject="ord-12345")


def test_keywords_in_traditional_chinese_match_simplified_rules_and_back():
    rules = _one({"keywords": ["无法登录", "發票"]})
    assert _hit(rules, text="我無法登錄帳號")
    assert _hit(rules, text="请开发票")


def test_all_given_conditions_must_hold():
    rules = _one({"channel": "email", "domain": "corp.cn", "keywords": ["invoice"], "tier": "vip"})
    base = {"sender": "a@corp.cn", "text": "invoice please", "customer_tier": "vip"}
    assert _hit(rules, **base)
    assert not _hit(rules, **{**base, "channel": "chat"})
    assert not _hit(rules, **{**base, "sender": "a@other.cn"})
    assert not _hit(rules, **{**base, "text": "hello"})
    assert not _hit(rules, **{**base, "customer_tier": None})


def test_actions_first_category_and_group_win_skills_accumulate():
    rules = parse_rules({"rules": [
        {"name": "a", "when": {"keywords": ["refund"]},
         "then": {"skills": ["billing"], "preferred_skills": ["senior", "billing"], "category": "billing"}},
        {"name": "b", "when": {"keywords": ["refund"]},
         "then": {"skills": ["vip"], "preferred_skills": ["mandarin"], "category": "other", "group": "g1"}},
        {"name": "c", "then": {"group": "g2", "tags": "seen"}},
    ]})
    result = classify(rules, channel="email", subject="refund", text="")
    assert result.required_skills == ("billing", "vip")
    assert result.preferred_skills == ("senior", "mandarin")  # a required skill is not also "preferred"
    assert (result.category, result.group, result.tags) == ("billing", "g1", ("seen",))
    nothing = classify(rules, channel="email", subject="hi", text="")
    assert (nothing.category, nothing.group, nothing.preferred_skills) == (None, "g2", ())


def test_a_top_level_routing_section_is_left_to_the_router():
    rules = parse_rules({"rules": [], "routing": {"anything": ["the", "router", "reads"]}})
    assert rules.rules == ()


@pytest.mark.parametrize("data,message", [
    ({"rules": [{"name": "bad re", "when": {"regex": ["ok", "(unclosed"]}, "then": {}}]},
     "rule 1 'bad re': when.regex: regex 2 '(unclosed' does not compile: missing ), unterminated subpattern"),
    ({"rules": [{"name": "s", "when": {"signal": "angry"}, "then": {}}]}, "rule 1 's': when.signal.0"),
    ({"rules": [{"name": "s", "when": {"sender": "example.com"}, "then": {}}]},
     "rule 1 's': when.sender: sender 'example.com' is not an address (use domain: for a whole domain)"),
    ({"rules": [{"name": "d", "when": {"domain": []}, "then": {}}]}, "rule 1 'd': when.domain: domain must not be empty"),
    ({"rules": [{"name": "g", "then": {"group": ""}}]}, "rule 1 'g': then.group"),
    ({"signals": {"complaint_patterns": ["[z-a]"]}}, "signals.complaint_patterns: regex 1 '[z-a]' does not compile"),
    ({"signals": {"repeat_contact_tickets": 0}}, "signals.repeat_contact_tickets"),
    ({"signals": {"complaint_word": ["x"]}}, "signals.complaint_word: Extra inputs"),
])
def test_bad_rules_name_the_rule_and_field(data, message):
    with pytest.raises(RulesError) as info:
        parse_rules(data, origin="routing rules f.yaml")
    assert f"routing rules f.yaml: {message}" in str(info.value)
