"""explain() and ``ticketmesh rules explain|validate``; the rules file reloaded on change; the
one-pass keyword index agrees with a plain per-rule regex search."""
import json
import os
import random
import re
from pathlib import Path

import pytest

from services.dispatcher.classify import (
    RulesError, classify, explain, fold, load_rules, parse_rules, rules_file,
)
from services.dispatcher.customers import CustomerHistory
from shared.cli import main

DEFAULT_RULES = Path(__file__).resolve().parents[4] / "deploy" / "config" / "routing.yaml"

RULES = {"rules": [
    {"name": "vip", "when": {"tier": "vip"}, "then": {"priority": "P2", "tags": ["vip"]}},
    {"name": "billing", "when": {"keywords": ["退款", "refund"], "fields": "subject"},
     "then": {"skills": ["billing"], "category": "billing"}},
    {"name": "order", "when": {"regex": [r"订单\s*\d{6,}"]}, "then": {"tags": ["has_order"]}, "stop": True},
    {"name": "later", "then": {"tags": ["never"]}},
]}


def test_explain_says_per_rule_what_matched_what_failed_and_what_was_not_evaluated():
    rules = parse_rules(RULES)
    kw = dict(channel="email", subject="申请退款", text="订单 123456 我要投诉", customer_tier=None,
              history=CustomerHistory(recent_tickets=2))
    why = explain(rules, **kw)
    assert why.classification == classify(rules, **kw)
    verdicts = [(v.name, v.outcome, v.reason) for v in why.rules]
    assert verdicts == [
        ("vip", "failed", "tier: standard is not one of vip"),
        ("billing", "matched", "keyword '退款' in subject"),
        ("order", "matched", r"regex '订单\s*\d{6,}' found '订单 123456' in text"),
        ("later", "not evaluated", "rule 'order' has stop: true"),
    ]
    assert why.rules[1].actions == "skills billing; category billing"
    assert dict(why.signals) == {"complaint_risk": "'投诉' in text",
                                 "repeat_contact": "2 recent tickets (>= 2)"}
    assert why.language == "zh" and why.language_reason == "detected from subject and text"

    english = explain(rules, channel="chat", subject="hello", text="refund", customer_language="en-GB")
    assert english.rules[1].reason == "keywords: none of 退款, refund in subject"
    assert english.language_reason == "given by the customer (en-GB)"


def test_cli_explain_prints_a_table_and_json(capsys):
    assert main(["rules", "explain", "--file", str(DEFAULT_RULES), "--subject", "申请退款",
                 "--text", "再不处理我就投诉到12315", "--tier", "vip", "--repeat", "3", "--complaints", "1"]) == 0
    out = capsys.readouterr().out
    assert "priority:         P1" in out
    assert "complaint_risk: '投诉' in text" in out
    assert re.search(r"complaint\s+matched\s+signal complaint_risk\s+→ priority P1", out)
    assert re.search(r"technical\s+failed\s+keywords: none of", out)

    assert main(["rules", "explain", "--file", str(DEFAULT_RULES), "--channel", "email", "--subject", "Invoice",
                 "--text", "see attached", "--sender", "li@cn.partner.example.com", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["result"]["required_skills"] == ["billing"]
    assert data["result"]["category"] == "billing"
    assert data["result"]["matched_rules"] == ["billing", "partner domain"]
    assert {r["rule"]: r["outcome"] for r in data["rules"]}["vip"] == "failed"


def test_cli_validate_exit_codes_name_file_rule_and_field(tmp_path, capsys):
    assert main(["rules", "validate", str(DEFAULT_RULES)]) == 0
    assert "rules, valid" in capsys.readouterr().out
    bad = tmp_path / "routing.yaml"
    bad.write_text("rules:\n  - name: tech\n    when: {regex: ['(oops']}\n    then: {}\n", encoding="utf-8")
    assert main(["rules", "validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"routing rules {bad}: rule 1 'tech': when.regex: regex 1 '(oops' does not compile" in err
    assert main(["rules", "explain", "--file", str(bad), "--text", "x"]) == 2
    bad.write_text("rules: []\nrouting: {capacity_model: per_seat}\n", encoding="utf-8")
    assert main(["rules", "validate", str(bad)]) == 2
    assert f"routing policy {bad}: routing.capacity_model" in capsys.readouterr().err


def test_the_default_rules_file_is_valid_and_reads_the_examples():
    rules = load_rules(DEFAULT_RULES)
    order = classify(rules, channel="email", subject="订单号：2024051201 没收到", text="")
    assert "has_order" in order.tags and order.preferred_skills == ("billing",)
    tech = classify(rules, channel="chat", subject="", text="Got HTTP 502 and ERR-1042 again")
    assert tech.required_skills == ("general",) and "error_code" in tech.tags


def test_rules_file_reloads_a_good_change_and_keeps_the_rules_on_a_bad_one(tmp_path):
    path = tmp_path / "routing.yaml"
    path.write_text("rules:\n  - name: a\n    when: {keywords: [退款]}\n    then: {skills: [billing]}\n", encoding="utf-8")
    reloading = rules_file(path, now=0.0, interval=2)

    def skills(now: float) -> tuple[str, ...]:
        return classify(reloading.current(now), channel="chat", subject="", text="退款").required_skills

    assert skills(0.0) == ("billing",)
    path.write_text("rules:\n  - name: a\n    when: {keywords: [退款]}\n    then: {skills: [refunds]}\n", encoding="utf-8")
    _bump(path)
    assert skills(1.0) == ("billing",)   # within the interval
    assert skills(2.0) == ("refunds",)
    path.write_text("rules:\n  - name: a\n    then: {priority: P7}\n", encoding="utf-8")
    _bump(path)
    assert skills(4.0) == ("refunds",)
    assert "rule 1 'a': then.priority" in (reloading.last_error or "")
    with pytest.raises(RulesError, match="cannot read routing rules"):
        rules_file(tmp_path / "missing.yaml", now=0.0)


def _bump(path: Path) -> None:
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def _naive_hits(word: str, haystack: str) -> bool:
    """The pre-index matcher: one regex per keyword (CJK substring, Latin at a word start)."""
    word = fold(word).strip()
    escaped = r"\s+".join(re.escape(p) for p in word.split())
    if word[-1].isdigit():
        escaped += r"(?![0-9])"
    if not re.search(r"[\u3400-\u9fff]", word) and word[0].isalnum():
        escaped = rf"(?<![a-z0-9]){escaped}"
    return re.search(escaped, haystack) is not None


def test_keyword_index_agrees_with_a_regex_per_keyword_on_random_text():
    words = ["refund", "ref", "charge", "charge back", "bill", "log in", "cannot log in", "退款", "退款申请",
             "款", "12315", "123", "error", "err", "e-mail"]
    rules = parse_rules({"rules": [{"name": w, "when": {"keywords": [w]}, "then": {}} for w in words],
                         "signals": {"builtin_complaint_words": False}})
    alphabet = ["refund", "ref", "charge", "back", "bill", "billing", "log", "in", " ", "  ", "\n", "退款", "申请",
                "款", "123", "12315", "0", "dis", "error", "-", "e", "mail", "cannot", "x"]
    rng = random.Random(5)
    for _ in range(400):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        expected = tuple(w for w in words if _naive_hits(w, fold(text)))
        assert classify(rules, channel="chat", subject="", text=text).matched_rules == expected, text
