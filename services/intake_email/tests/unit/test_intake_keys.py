"""intake: which key a message is known by, and the stable ids derived from ticket numbers."""
from datetime import datetime, timezone

from shared.intake_ledger import stable_event_id
from services.intake_email import intake
from services.intake_email.imap import FetchedMail
from services.intake_email.normalize import normalize

AT = datetime(2026, 11, 22, 8, 30, tzinfo=timezone.utc)


def fetched(raw: bytes, uid: int = 7, mailbox: str = "support") -> FetchedMail:
    return FetchedMail(mailbox, 1700000000, uid, raw, AT, len(raw))


def test_message_id_is_the_key_whatever_mailbox_or_uid_delivered_it():
    raw = b"From: a@example.com\r\nMessage-ID: <same@example.com>\r\nSubject: s\r\n\r\nbody\r\n"
    mail = normalize(raw, received_at=AT)
    first = intake.contact_key(mail, fetched(raw, uid=7, mailbox="support"))
    second = intake.contact_key(mail, fetched(raw, uid=99, mailbox="sales"))
    assert first == second
    assert first.kind == intake.KIND_MESSAGE_ID


def test_mail_without_message_id_is_keyed_by_where_it_sits_and_its_headers():
    raw = b"From: a@example.com\r\nSubject: s\r\nDate: Sun, 22 Nov 2026 08:00:00 +0000\r\n\r\nbody\r\n"
    mail = normalize(raw, received_at=AT)
    key = intake.contact_key(mail, fetched(raw, uid=7))
    assert key.kind == intake.KIND_NO_MESSAGE_ID
    assert key == intake.contact_key(mail, fetched(raw, uid=7))
    assert key != intake.contact_key(mail, fetched(raw, uid=8))


def test_ticket_fields_carry_stable_ids_and_the_source_keys():
    raw = (b"From: =?utf-8?B?5byg5Lyf?= <zw@example.com>\r\nMessage-ID: <m1@example.com>\r\n"
           b"Subject: hi\r\n\r\nbody\r\n")
    mail = normalize(raw, received_at=AT)
    fields = intake.ticket_received_fields(mail, fetched(raw), "TM-10001")
    assert fields["event_id"] == stable_event_id("ticket_received", "TM-10001")
    assert fields["source"] == {"mailbox": "support", "uid": "7", "uidvalidity": "1700000000",
                                "message_id": "m1@example.com"}
    assert fields["customer"] == {"name": "张伟", "email": "zw@example.com", "language": "en",
                                  "verified": ["email"]}
    assert intake.trace_id_for("TM-10001") == intake.trace_id_for("TM-10001") != intake.trace_id_for("TM-10002")
