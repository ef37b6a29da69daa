"""Bounces reach the ticket of the mail that bounced; ticketed mail keeps its raw bytes on disk.

Real Dovecot, RabbitMQ vhost and Redis database (fixtures in conftest.py).
"""
import gzip
import hashlib
import json
from email.message import EmailMessage

from shared import mail_tokens
from services.intake_email.config import ATTACHMENT_MAX_BYTES_CONFIG_KEY, DATA_DIR_CONFIG_KEY, MAILBOXES_CONFIG_KEY
from services.intake_email.service import IntakeEmailService
from shared.intake_ledger import stable_event_id

from .conftest import make_mail, wait_until
from .test_intake_email_service import Recorder, subject_is

SECRET = mail_tokens.DEV_SECRET.encode()  # what the service uses when TM_MAIL_TOKEN_SECRET is unset


def postfix_dsn(recipient: str, original_message_id: str, *, status: str = "5.1.1",
                bounce_id: str = "<20260302083000.A1B2C3@mail.example.com>") -> bytes:
    return (
        "From: MAILER-DAEMON@mail.example.com (Mail Delivery System)\r\n"
        "To: support@ticketmesh.test\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: {bounce_id}\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="X"\r\n\r\n'
        "--X\r\nContent-Type: text/plain\r\n\r\nThis is the mail system at host mail.example.com.\r\n"
        "--X\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mail.example.com\r\nX-Postfix-Queue-ID: A1B2C3\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nOriginal-Recipient: rfc822;{recipient}\r\n"
        f"Action: failed\r\nStatus: {status}\r\nRemote-MTA: dns; mx.example.com\r\n"
        f"Diagnostic-Code: smtp; 550 {status} <{recipient}>: Recipient address rejected: User unknown\r\n"
        "--X\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: support@ticketmesh.test\r\nTo: {recipient}\r\nMessage-ID: {original_message_id}\r\n"
        "--X--\r\n"
    ).encode()


def test_a_bounce_of_our_mail_publishes_mail_bounced_on_that_ticket_and_opens_nothing(
        start_intake, mailbox, event_listener, tmp_path):
    events = Recorder(event_listener("intake_email"))
    start_intake()
    mailbox.append(make_mail("where is my parcel", sender="Cheng Li <cheng.li@example.com>",
                             message_id="<parcel-1@example.com>"))
    ticket = events.wait_for(subject_is("where is my parcel"))
    ours = mail_tokens.message_id(SECRET, ticket["ticket_id"], "n1", "ticketmesh.test")
    dsn = postfix_dsn("cheng.li@example.com", ours)
    bounce_uid = mailbox.append(dsn)

    bounced = events.wait_for(lambda t, b: t == "mail_bounced")
    assert bounced["ticket_id"] == ticket["ticket_id"]
    assert bounced["trace_id"] == ticket["trace_id"]
    assert bounced["recipients"] == ["cheng.li@example.com"]
    assert (bounced["status"], bounced["hard"]) == ("5.1.1", True)
    assert bounced["reason"].startswith("550 5.1.1 <cheng.li@example.com>: Recipient address rejected")
    assert bounced["original_message_id"] == ours.strip("<>")
    assert bounced["reporting_mta"] == "mail.example.com"
    assert bounced["event_id"] == stable_event_id(
        "mail_bounced", hashlib.sha256(b"20260302083000.A1B2C3@mail.example.com").hexdigest()[:32])

    # The bounce is still kept aside with its reason, and it opened no ticket nor follow-up.
    wait_until(lambda: mailbox.checkpoint_uid() == bounce_uid, what="checkpoint past the bounce")
    stem = f"{ticket['source']['uidvalidity']}-{bounce_uid}"
    note = json.loads((tmp_path / "quarantine" / "support" / f"{stem}.json").read_text())
    assert note["reason"] == "automatic:bounce:multipart-report-delivery-status"
    assert (tmp_path / "quarantine" / "support" / f"{stem}.eml").read_bytes() == dsn
    assert events.subjects() == ["where is my parcel"]
    assert not [t for t, _ in events.events if t == "message_received"]


def test_only_our_signed_message_id_ties_a_bounce_to_a_ticket(start_intake, mailbox, event_listener):
    """Anyone can send a delivery report: one quoting a customer's Message-ID we stored, a forged
    token or an id we never saw names no ticket (and the notifier then suppresses nobody)."""
    events = Recorder(event_listener("intake_email"))
    start_intake()
    mailbox.append(make_mail("refund please", message_id="<refund-1@example.com>"))
    ticket = events.wait_for(subject_is("refund please"))
    forged = "<tm.TM-10001.n1.aaaaaaaaaaaa@ticketmesh.test>"
    ours = mail_tokens.message_id(SECRET, ticket["ticket_id"], "n2", "ticketmesh.test")
    mailbox.append(postfix_dsn("a@example.com", "<refund-1@example.com>", status="4.2.2", bounce_id="<b1@mx>"))
    mailbox.append(postfix_dsn("b@example.com", forged, bounce_id="<b2@mx>"))
    mailbox.append(postfix_dsn("c@example.com", "<never-seen@example.com>", bounce_id="<b3@mx>"))
    mailbox.append(postfix_dsn("d@example.com", ours, bounce_id="<b4@mx>"))
    events.wait_for(lambda t, b: t == "mail_bounced" and b["recipients"] == ["d@example.com"])
    bounced = {b["recipients"][0]: b for t, b in events.events if t == "mail_bounced"}
    assert {address: b["ticket_id"] for address, b in bounced.items()} == {
        "a@example.com": None, "b@example.com": None, "c@example.com": None, "d@example.com": ticket["ticket_id"]}
    assert bounced["a@example.com"]["hard"] is False


def test_a_ticketed_mail_keeps_its_raw_bytes_compressed_and_names_them_on_the_event(
        start_intake, mailbox, event_listener, tmp_path):
    events = Recorder(event_listener("intake_email"))
    start_intake()
    raw = make_mail("keep me", "the whole original", message_id="<keep-1@example.com>")
    mailbox.append(raw)
    ticket = events.wait_for(subject_is("keep me"))
    digest = ticket["source"]["raw_sha256"]
    kept = gzip.decompress((tmp_path / "raw" / digest[:2] / f"{digest}.eml.gz").read_bytes())
    assert hashlib.sha256(kept).hexdigest() == digest
    assert kept.replace(b"\r\n", b"\n") == raw.replace(b"\r\n", b"\n")  # as Dovecot hands it out (CRLF)
    assert ticket["attachments"] == []

    reply = make_mail("Re: keep me", "and a follow-up", message_id="<keep-2@example.com>",
                      in_reply_to="<keep-1@example.com>")
    mailbox.append(reply)
    follow_up = events.wait_for(lambda t, b: t == "message_received")
    digest = follow_up["source"]["raw_sha256"]
    kept = gzip.decompress((tmp_path / "raw" / digest[:2] / f"{digest}.eml.gz").read_bytes())
    assert b"and a follow-up" in kept and hashlib.sha256(kept).hexdigest() == digest


def test_attachments_are_stored_by_content_and_listed_on_the_ticket_with_the_over_limit_one_unstored(
        service_container, mailbox, event_listener, tmp_path):
    events = Recorder(event_listener("intake_email"))
    service_container(IntakeEmailService, **{
        MAILBOXES_CONFIG_KEY: [mailbox.settings()], DATA_DIR_CONFIG_KEY: str(tmp_path),
        ATTACHMENT_MAX_BYTES_CONFIG_KEY: 2048,
    }).start()
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "Cheng Li <cheng.li@example.com>", "support@example.com", "invoice attached"
    msg["Message-ID"] = "<invoice-1@example.com>"
    msg.set_content("see attached")
    pdf, big = b"%PDF-1.4 small invoice", b"x" * 3000
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename="发票.pdf")
    msg.add_attachment(big, maintype="application", subtype="zip", filename="logs.zip")
    mailbox.append(msg.as_bytes())

    ticket = events.wait_for(subject_is("invoice attached"))
    pdf_sha, big_sha = hashlib.sha256(pdf).hexdigest(), hashlib.sha256(big).hexdigest()
    assert [(a["filename"], a["content_type"], a["size"], a["sha256"], a["stored"]) for a in ticket["attachments"]] == [
        ("发票.pdf", "application/pdf", len(pdf), pdf_sha, True),
        ("logs.zip", "application/zip", len(big), big_sha, False),
    ]
    assert (tmp_path / "attachments" / pdf_sha[:2] / pdf_sha).read_bytes() == pdf
    assert not (tmp_path / "attachments" / big_sha[:2]).exists()
