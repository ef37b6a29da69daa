"""The pure decisions: flood throttling, mailbox health and readiness, who is told about a rejection."""
import email
from datetime import datetime, timezone

import pytest

from services.intake_email import flood, health, rejection

POLICY = flood.FloodPolicy.from_minutes(3, 10)


@pytest.mark.parametrize("count, throttled", [(1, False), (3, False), (4, True), (50, True)])
def test_a_sender_over_the_limit_is_throttled_with_a_reason(count, throttled):
    reason = flood.throttle_reason(POLICY, count)
    assert (reason is not None) == throttled
    if throttled:
        assert reason == f"flood: {count} messages from this sender within 10 minutes (limit 3)"


def test_a_message_counts_by_identity_not_by_delivery():
    by_id = flood.message_member("<a@example.com>", "support", 1, 7)
    assert by_id == flood.message_member(" <a@example.com> ", "sales", 9, 99)  # same mail, another mailbox
    assert flood.message_member(None, "support", 1, 7) == flood.message_member("", "support", 1, 7)
    assert flood.message_member(None, "support", 1, 7) != flood.message_member(None, "support", 1, 8)
    assert flood.sender_hash("Zhang@Example.com ") == flood.sender_hash("zhang@example.com")
    assert "zhang" not in flood.sender_hash("zhang@example.com")


NOW = 1_000_000.0
JUDGEMENTS = [
    ("watching, fresh", {"state": "watching", "since": NOW - 500, "last_ok_at": NOW - 5}, "h", True, ""),
    ("reconnecting briefly", {"state": "reconnecting", "since": NOW - 30, "last_ok_at": NOW - 40}, "h", True, ""),
    ("reconnecting too long", {"state": "reconnecting", "since": NOW - 200, "last_ok_at": NOW - 200}, "h", False,
     "stalled"),
    ("auth failed from the start", {"state": "auth_failed", "since": NOW - 121}, "h", False, "stalled"),
    ("auth failed just now", {"state": "auth_failed", "since": NOW - 3}, "h", True, ""),
    ("watching but hung", {"state": "watching", "since": NOW - 900, "last_ok_at": NOW - 300}, "h", False, "stalled"),
    ("nobody holds the lease", {"state": "watching", "since": NOW - 5, "last_ok_at": NOW - 1}, None, False,
     "unwatched"),
    ("no record yet", {}, "h", False, "stalled"),
]


@pytest.mark.parametrize("record, holder, ok, problem", [j[1:] for j in JUDGEMENTS], ids=[j[0] for j in JUDGEMENTS])
def test_mailbox_judgement(record, holder, ok, problem):
    judged = health.judge_mailbox("support", {k: str(v) for k, v in record.items()}, holder, now=NOW,
                                  stall_seconds=120)
    assert (judged.ok, judged.problem) == (ok, problem)


def test_readiness_names_the_stalled_mailbox_and_since_when():
    good = health.judge_mailbox("sales", {"state": "watching", "since": str(NOW - 9), "last_ok_at": str(NOW - 1)},
                                "h", now=NOW, stall_seconds=120)
    bad = health.judge_mailbox("support", {"state": "reconnecting", "since": str(NOW - 300),
                                           "last_ok_at": str(NOW - 400), "last_error": "ConnectionRefusedError"},
                               "h", now=NOW, stall_seconds=120)
    status, body = health.readiness(redis_ok=True, rabbitmq_ok=True, mailboxes=[good, bad], now=NOW)
    assert status == 503
    assert body["stalled"] == ["support"]
    support = body["mailboxes"][1]
    assert support["state"] == "reconnecting" and support["problem"] == "stalled"
    assert support["stalled_since"] == datetime.fromtimestamp(NOW - 400, timezone.utc).isoformat()
    assert support["stalled_seconds"] == 400
    assert health.readiness(redis_ok=True, rabbitmq_ok=True, mailboxes=[good], now=NOW)[0] == 200
    assert health.readiness(redis_ok=True, rabbitmq_ok=False, mailboxes=[good], now=NOW)[0] == 503


def headers(sender, subject="big file", message_id="<m1@example.com>"):
    return email.message_from_string(f"From: {sender}\nSubject: {subject}\nMessage-ID: {message_id}\n\n")


@pytest.mark.parametrize("sender, told", [
    ("Zhang Wei <zhang.wei@example.com>", True),
    ("noreply@shop.example", False),
    ("No-Reply <no-reply@shop.example>", False),
    ("donotreply+x@bank.example", False),
    ("MAILER-DAEMON@mx.example", False),
    ("bounces+123@lists.example", False),
    ("notifications@github.example", False),
    ("", False),
    ("norah@example.com", True),
])
def test_only_people_are_told_their_mail_was_too_large(sender, told):
    fields = rejection.too_large_fields(headers(sender), mailbox="support", uidvalidity=5, uid=9, size=20_000_000,
                                        limit=10_485_760, received_at=datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert (fields is not None) == told


def test_rejection_fields_and_stable_ids():
    fields = rejection.too_large_fields(headers("=?utf-8?b?5byg5Lyf?= <Zhang.Wei@example.com>", "=?utf-8?b?5aSn5paH5Lu2?="),
                                        mailbox="support", uidvalidity=5, uid=9, size=20, limit=10,
                                        received_at=datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert fields["to"] == "zhang.wei@example.com" and fields["name"] == "张伟"
    assert fields["subject"] == "大文件" and fields["original_message_id"] == "m1@example.com"
    assert (fields["reason"], fields["size"], fields["limit"]) == ("too_large", 20, 10)
    assert fields["event_id"] == rejection.event_ids("support", 5, 9)[0] != rejection.event_ids("support", 5, 10)[0]
