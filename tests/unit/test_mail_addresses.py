"""One rule for machines' mailboxes, read by intake_email (who is told a mail was refused) and
the notifier (who gets automatic mail): the two must not drift apart."""
import email
from datetime import datetime, timezone

import pytest

from services.intake_email import rejection
from services.notifier import loop_safety
from shared import mail_addresses

MACHINES = ["nobody@example.com", "notifications@github.example", "notification+x@service.example",
            "MAILER-DAEMON@mx.example", "bounces+123@lists.example", "no-reply@shop.example", "10000@qq.com"]
PEOPLE = ["zhang.wei@example.com", "nobody.fan@example.com", "notifier.li@example.com", "daemon.fan@example.com"]


@pytest.mark.parametrize("address", MACHINES)
def test_a_machines_mailbox_is_neither_told_nor_mailed_automatically(address):
    assert mail_addresses.is_system_address(address)
    assert loop_safety.skip_reason(address, automatic=True) == loop_safety.SYSTEM_ADDRESS
    assert _told(address) is False


@pytest.mark.parametrize("address", PEOPLE)
def test_a_persons_mailbox_is_told_and_mailed(address):
    assert not mail_addresses.is_system_address(address)
    assert loop_safety.skip_reason(address, automatic=True) is None
    assert _told(address) is True


@pytest.mark.parametrize("address", ["not an address", "a@b", "@example.com", "user@"])
def test_a_malformed_sender_is_not_told(address):
    assert not mail_addresses.is_valid_address(address)
    assert _told(address) is False


def _told(address: str) -> bool:
    msg = email.message_from_string(f"From: {address}\nSubject: big\nMessage-ID: <m1@example.com>\n\n")
    fields = rejection.too_large_fields(msg, mailbox="support", uidvalidity=1, uid=1, size=20_000_000,
                                        limit=10_485_760, received_at=datetime(2026, 1, 1, tzinfo=timezone.utc))
    return fields is not None
