"""parse_bounce on bounces shaped like the ones Postfix, Exim, Exchange, Gmail, qmail and QQ send."""
from __future__ import annotations

import base64

import pytest

from services.intake_email.bounces import BounceReport, parse_bounce

ORIGINAL_HEADERS = (
    "From: TicketMesh Support <support@ticketmesh.test>\r\n"
    "To: cheng.li@example.com\r\n"
    "Subject: [#TM-10001] We received your request\r\n"
    "Message-ID: <tm.TM-10001.abc123.k2mzq4xv7a3b@ticketmesh.test>\r\n"
)


def dsn(*, reporting_mta: str, recipient_fields: str, human: str, original: str = "message/rfc822",
        sender: str = "MAILER-DAEMON@mail.example.com", subject: str = "Undelivered Mail Returned to Sender",
        extra_headers: str = "") -> bytes:
    original_part = (
        f"Content-Type: {original}\r\n\r\n{ORIGINAL_HEADERS}"
        + ("\r\nHello Cheng Li,\r\nwe received your request.\r\n" if original == "message/rfc822" else "")
    )
    return (
        f"From: {sender}\r\nTo: support@ticketmesh.test\r\nSubject: {subject}\r\n"
        "Date: Mon, 02 Mar 2026 08:30:00 +0000\r\nMessage-ID: <bounce-1@mail.example.com>\r\n"
        f"{extra_headers}"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        f"{human}\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: {reporting_mta}\r\nArrival-Date: Mon, 02 Mar 2026 08:29:58 +0000\r\n\r\n"
        f"{recipient_fields}\r\n"
        f"--B\r\n{original_part}\r\n--B--\r\n"
    ).encode()


POSTFIX = dsn(
    reporting_mta="dns; mail.example.com",
    recipient_fields=(
        "Final-Recipient: rfc822; cheng.li@example.com\r\nOriginal-Recipient: rfc822;Cheng.Li@example.com\r\n"
        "Action: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx.example.com\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <cheng.li@example.com>: Recipient address rejected:\r\n"
        "    User unknown in virtual mailbox table"
    ),
    human="This is the mail system at host mail.example.com.\r\n\r\nI'm sorry to have to inform you that "
          "your message could not\r\nbe delivered to one or more recipients.",
)
EXIM = dsn(
    reporting_mta="dns; exim.example.org",
    sender="Mail Delivery System <Mailer-Daemon@exim.example.org>",
    subject="Mail delivery failed: returning message to sender",
    recipient_fields=(
        "Action: delayed\r\nFinal-Recipient: rfc822;full@example.org\r\nStatus: 4.2.2\r\n"
        "Remote-MTA: dns; mx.example.org\r\nDiagnostic-Code: smtp; 452 4.2.2 Mailbox full"
    ),
    human="This message was created automatically by mail delivery software.",
    original="text/rfc822-headers",
)
EXCHANGE = dsn(
    reporting_mta="dns;BN8PR12MB3345.namprd12.prod.outlook.com",
    sender="postmaster@contoso.onmicrosoft.com",
    subject="Undeliverable: [#TM-10001] We received your request",
    recipient_fields=(
        "Final-recipient: RFC822; gone@contoso.com\r\nAction: failed\r\nStatus: 5.1.10\r\n"
        "Diagnostic-code: smtp; 550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP "
        "address lookup\r\nX-Display-Name: Gone User"
    ),
    human="Your message to gone@contoso.com couldn't be delivered.",
    original="text/rfc822-headers",
)
GMAIL = dsn(
    reporting_mta="dns; googlemail.com",
    sender="Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
    subject="Delivery Status Notification (Failure)",
    recipient_fields=(
        "Final-Recipient: rfc822; nobody.here@gmail.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Remote-MTA: dns; gmail-smtp-in.l.google.com. (2607:f8b0:4023:c0b::1b, the server for the domain "
        "gmail.com.)\r\nDiagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does not exist."
        "\r\n 550 5.1.1  https://support.google.com/mail/?p=NoSuchUser"
    ),
    human="** Address not found **\r\n\r\nYour message wasn't delivered to nobody.here@gmail.com",
)

QQ_TEXT = (
    "From: PostMaster <PostMaster@qq.com>\r\nTo: support@ticketmesh.test\r\n"
    "Subject: =?gb18030?B?z7XNs83Lsrs6ILKiztC01c3YIM7Sw8fS0crVtb3E+rXE?=\r\n"
    "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=gb2312\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.encodebytes(
        "很抱歉您发送的邮件被退回，以下是该邮件的相关信息：\r\n"
        "被退回的邮件\r\n主    题：[#TM-10001] 我们已收到您的请求\r\n"
        "收件人：wrong.user@qq.com\r\n\r\n退信原因\r\n"
        "550 Mailbox not found or access denied\r\n\r\n"
        "------------------ 原始邮件 ------------------\r\n"
        "From: support@ticketmesh.test\r\nTo: wrong.user@qq.com\r\n"
        "Message-ID: <tm.TM-10001.abc123.k2mzq4xv7a3b@ticketmesh.test>\r\n".encode("gb2312")
    ).decode()
).encode()

QMAIL_TEXT = (
    b"From: MAILER-DAEMON@mx.example.net\r\nTo: support@ticketmesh.test\r\nSubject: failure notice\r\n\r\n"
    b"Hi. This is the qmail-send program at mx.example.net.\r\n"
    b"I'm afraid I wasn't able to deliver your message to the following addresses.\r\n"
    b"This is a permanent error; I've given up. Sorry it didn't work out.\r\n\r\n"
    b"<Old.Customer@example.net>:\r\n192.0.2.7 does not like recipient.\r\n"
    b"Remote host said: 550 5.1.1 <old.customer@example.net>... User unknown\r\n"
    b"Giving up on 192.0.2.7.\r\n\r\n"
    b"--- Below this line is a copy of the message.\r\n\r\n"
    b"Return-Path: <support@ticketmesh.test>\r\nTo: someone.else@example.net\r\n"
    b"Message-ID: <tm.TM-10002.n1.k2mzq4xv7a3b@ticketmesh.test>\r\n"
)

EXIM_TEXT = (
    b"From: Mail Delivery System <Mailer-Daemon@exim.example.org>\r\nTo: support@ticketmesh.test\r\n"
    b"Subject: Mail delivery failed: returning message to sender\r\n"
    b"X-Original-Message-ID: <customer-q-1@example.org>\r\n\r\n"
    b"This message was created automatically by mail delivery software.\r\n\r\n"
    b"A message that you sent could not be delivered to one or more of its\r\n"
    b"recipients. This is a permanent error. The following address(es) failed:\r\n\r\n"
    b"  left.company@example.org\r\n"
    b"    host mx.example.org [192.0.2.1]\r\n"
    b"    SMTP error from remote mail server after RCPT TO:<left.company@example.org>:\r\n"
    b"    550 No such user here\r\n\r\n"
    b"------ This is a copy of the message, including all the headers. ------\r\n"
    b"To: another@example.org\r\n"
)


@pytest.mark.parametrize("raw, expected", [
    pytest.param(POSTFIX, BounceReport(
        recipients=("cheng.li@example.com",), status="5.1.1",
        reason="550 5.1.1 <cheng.li@example.com>: Recipient address rejected: User unknown in virtual mailbox table",
        hard=True, original_message_id="tm.TM-10001.abc123.k2mzq4xv7a3b@ticketmesh.test",
        reporting_mta="mail.example.com"), id="postfix"),
    pytest.param(EXIM, BounceReport(
        recipients=("full@example.org",), status="4.2.2", reason="452 4.2.2 Mailbox full", hard=False,
        original_message_id="tm.TM-10001.abc123.k2mzq4xv7a3b@ticketmesh.test", reporting_mta="exim.example.org"),
        id="exim-delayed-soft"),
    pytest.param(EXCHANGE, BounceReport(
        recipients=("gone@contoso.com",), status="5.1.10",
        reason="550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        hard=True, original_message_id="tm.TM-10001.abc123.k2mzq4xv7a3b@ticketmesh.test",
        reporting_mta="BN8PR12MB3345.namprd12.prod.outlook.com"), id="exchange"),
    pytest.param(GMAIL, BounceReport(
        recipients=("nobody.here@gmail.com",), status="5.1.1",
        reason="550-5.1.1 The email account that you tried to reach does not exist. 550 5.1.1 "
               "https://support.google.com/mail/?p=NoSuchUser",
        hard=True, original_message_id="tm.TM-10001.abc123.k2mzq4xv7a3b@ticketmesh.test",
        reporting_mta="googlemail.com"), id="gmail"),
    pytest.param(QQ_TEXT, BounceReport(
        recipients=("wrong.user@qq.com",), status="", reason="550 Mailbox not found or access denied", hard=True,
        original_message_id="tm.TM-10001.abc123.k2mzq4xv7a3b@ticketmesh.test", reporting_mta="qq.com"),
        id="qq-chinese-text"),
    pytest.param(QMAIL_TEXT, BounceReport(
        recipients=("old.customer@example.net",), status="5.1.1",
        reason="550 5.1.1 <old.customer@example.net>... User unknown", hard=True,
        original_message_id="tm.TM-10002.n1.k2mzq4xv7a3b@ticketmesh.test", reporting_mta="mx.example.net"),
        id="qmail-text"),
    pytest.param(EXIM_TEXT, BounceReport(
        recipients=("left.company@example.org",), status="", reason="550 No such user here", hard=True,
        original_message_id="customer-q-1@example.org", reporting_mta="exim.example.org"), id="exim-text"),
])
def test_bounce_report(raw, expected):
    assert parse_bounce(raw) == expected


def test_exims_failed_recipients_header_names_the_recipients():
    raw = EXIM_TEXT.replace(b"X-Original-Message-ID", b"X-Failed-Recipients: A@example.org,\r\n b@example.org\r\n"
                                                      b"X-Original-Message-ID")
    assert parse_bounce(raw).recipients == ("a@example.org", "b@example.org")


def test_status_decides_over_the_smtp_code_and_without_either_a_failure_is_soft():
    soft_4xx = POSTFIX.replace(b"Status: 5.1.1", b"Status: 4.4.1")
    assert parse_bounce(soft_4xx).hard is False
    no_status_5xx = POSTFIX.replace(b"Status: 5.1.1\r\n", b"")
    assert parse_bounce(no_status_5xx).hard is True
    assert parse_bounce(no_status_5xx).status == "5.1.1"  # read from the diagnostic instead
    nothing = POSTFIX.replace(b"Status: 5.1.1\r\n", b"").replace(b"550 5.1.1 ", b"")
    report = parse_bounce(nothing)
    assert (report.status, report.hard) == ("", False)


def test_delivered_recipients_of_a_mixed_report_are_not_bounced():
    mixed = POSTFIX.replace(
        b"Final-Recipient: rfc822; cheng.li@example.com",
        b"Final-Recipient: rfc822; fine@example.com\r\nAction: delivered\r\nStatus: 2.0.0\r\n\r\n"
        b"Final-Recipient: rfc822; cheng.li@example.com")
    assert parse_bounce(mixed).recipients == ("cheng.li@example.com",)


def test_original_message_id_header_when_no_copy_is_attached():
    without_copy = POSTFIX.replace(b"Message-ID: <tm.TM-10001", b"X-Nothing: <tm.TM-10001")
    assert parse_bounce(without_copy).original_message_id is None
    with_header = without_copy.replace(b"MIME-Version", b"Original-Message-ID: <ours-7@ticketmesh.test>\r\nMIME-Version")
    assert parse_bounce(with_header).original_message_id == "ours-7@ticketmesh.test"


def test_reason_is_one_line_of_at_most_500_characters():
    long = POSTFIX.replace(b"User unknown in virtual mailbox table", b"x" * 2000)
    reason = parse_bounce(long).reason
    assert len(reason) == 500 and "\n" not in reason


@pytest.mark.parametrize("raw", [
    b"From: Zhang Wei <zhang.wei@example.com>\r\nSubject: invoice\r\n\r\n550 is our order number <a@b.com>\r\n",
    b"", b"\xff\xfe\x00garbage", b"Content-Type: multipart/report; report-type=delivery-status\r\n\r\n--",
    b"From: MAILER-DAEMON@x.example\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n",
    b"From: postmaster@x.example\r\nSubject: failure notice\r\n\r\nsomething went wrong, no address here\r\n",
])
def test_not_a_bounce_or_nobody_named_is_none_and_never_raises(raw):
    assert parse_bounce(raw) is None


def test_never_raises_on_non_messages():
    assert parse_bounce(None) is None  # type: ignore[arg-type]
    assert parse_bounce("text") is None  # type: ignore[arg-type]
