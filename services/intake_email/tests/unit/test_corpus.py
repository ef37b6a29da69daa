"""The corpus: real-world shaped mail (tests/corpus/*.eml) against what intake must make of it.

One test per message; the expectations are in tests/corpus/expected.yaml (its header says how
each kind of entry is checked). A message without expectations, or expectations without a
message, fails too: the corpus and its table cannot drift apart.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from services.intake_email.report import describe

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
EXPECTED: dict[str, dict] = yaml.safe_load((CORPUS / "expected.yaml").read_text(encoding="utf-8"))
OUR_ADDRESS = "support@ticketmesh.test"
RECEIVED_AT = datetime(2026, 11, 22, 1, 15, tzinfo=timezone.utc)
ALL_FIELDS = {"from_email", "from_name", "subject", "text", "reply_text", "html_sanitized", "attachments",
              "message_id", "in_reply_to", "references", "thread_candidates", "auto_reply", "bounce", "automatic",
              "charset_flags"}
MIN_MESSAGES = 35


def _field(report: dict, name: str):
    """A field of the report; ``bounce_<key>`` reaches into the bounce details."""
    if name in report:
        return report[name]
    if name.startswith("bounce_") and isinstance(report.get("bounce"), dict):
        return report["bounce"].get(name.removeprefix("bounce_"))
    raise AssertionError(f"no field {name!r} in {sorted(report)}")


def _has(value, needle: str) -> bool:
    assert isinstance(needle, str), f"expected.yaml: {needle!r} is not a string (quote it)"
    if isinstance(value, list):
        return any(needle in str(item) for item in value)
    return value is not None and needle in value


def check(report: dict, expected: dict) -> list[str]:
    """Every way ``report`` differs from the expectations, as readable lines (empty: it matches)."""
    problems = []
    if "quarantined_contains" not in expected and "quarantined" in report:
        return [f"quarantined: {report['quarantined']}"]
    for key, want in expected.items():
        if key.endswith("_contains") or key.endswith("_excludes"):
            name, check_kind = key.rsplit("_", 1)
            value = _field(report, name)
            for needle in [want] if isinstance(want, str) else want:
                if (check_kind == "contains") != _has(value, needle):
                    problems.append(f"{name} should {'' if check_kind == 'contains' else 'not '}contain "
                                    f"{needle!r}: {value!r}")
        elif key == "charset_flags":
            if bool(report["charset_flags"]) != want:
                problems.append(f"charset_flags should be {'non-' if want else ''}empty: {report['charset_flags']}")
        elif key == "bounce" and isinstance(want, dict):
            got = report["bounce"]
            if not isinstance(got, dict):
                problems.append(f"bounce should be details, is {got!r}")
                continue
            problems += [f"bounce.{k}: {got.get(k)!r} != {v!r}" for k, v in want.items() if got.get(k) != v]
        elif key == "attachments":
            got = report["attachments"]
            if len(got) != len(want):
                problems.append(f"attachments: {len(got)} instead of {len(want)}: {got}")
                continue
            for i, (item, wanted) in enumerate(zip(got, want)):
                problems += [f"attachments[{i}].{k}: {item.get(k)!r} != {v!r}" for k, v in wanted.items()
                             if item.get(k) != v]
        elif _field(report, key) != want:
            problems.append(f"{key}: {_field(report, key)!r} != {want!r}")
    return problems


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_message(name):
    report = describe((CORPUS / name).read_bytes(), our_address=OUR_ADDRESS, received_at=RECEIVED_AT)
    json.dumps(report)  # what `ticketmesh email parse --json` prints: plain data only
    if "quarantined" not in report:
        assert set(report) == ALL_FIELDS
    assert check(report, EXPECTED[name]) == []


def test_every_message_has_expectations_and_every_expectation_a_message():
    files = {path.name for path in CORPUS.glob("*.eml")}
    assert files == set(EXPECTED)
    assert len(files) >= MIN_MESSAGES


def test_the_checker_notices_a_difference():
    """The table is only worth something if a wrong field fails it."""
    report = {"subject": "x", "text": "hello", "charset_flags": [], "bounce": {"hard": True},
              "attachments": [{"filename": "a.pdf"}]}
    assert check(report, {"subject": "x", "text_contains": ["ell"], "charset_flags": False}) == []
    assert len(check(report, {
        "subject": "y", "text_contains": ["bye"], "text_excludes": ["hel"], "charset_flags": True,
        "bounce": {"hard": False}, "attachments": [{"filename": "b.pdf"}],
    })) == 6
    assert check({"quarantined": "no header section"}, {"subject": "x"}) == ["quarantined: no header section"]
