"""The rejection mail for refused inbound mail, and bounced addresses in loop_safety.skip_reason."""
import pytest

from services.notifier import loop_safety as ls
from services.notifier import messages as m
from services.notifier.tests.factories import NOW, mail_rejected, parse

SENDER = m.Sender("support@ticketmesh.test", "TicketMesh 客服")


def _rejection(**kw):
    event = parse("intake_email", "mail_rejected", mail_rejected(**kw))
    return m.rejection_notice(event, sender=SENDER, notification="n9", now=NOW)


def test_chinese_rejection_says_what_was_too_large_and_what_to_do():
    mail = _rejection()
    assert mail["Subject"] == "您的邮件未能送达：邮件过大"
    body = mail.get_content()
    assert "您的邮件“合同扫描件”过大（30 MB，上限为 10 MB）" in body
    assert "减小附件后重新发送" in body and "分享链接" in body
    assert mail["To"].addresses[0].addr_spec == "zhang.wei@example.com"


def test_english_rejection():
    body = _rejection(language="en", subject="Signed contract", size=12_900_000, name="Sam").get_content()
    assert body.startswith("Hello Sam,\n")
    assert 'your message "Signed contract" was too large for us to receive\n(12.3 MB; the limit is 10 MB)' in body
    assert "smaller attachments, or share a link" in body


def test_rejection_is_an_automatic_answer_threaded_on_the_refused_mail_and_names_no_ticket():
    mail = _rejection()
    assert mail["Auto-Submitted"] == "auto-replied"
    assert mail["X-Auto-Response-Suppress"] == "All"
    assert mail["In-Reply-To"] == "<big-1@example.com>"
    assert mail["Message-ID"] == "<tm.rejected.n9@ticketmesh.test>"
    assert "TM-" not in mail["Subject"]


@pytest.mark.parametrize("size, shown", [(31_457_280, "30"), (12_900_000, "12.3"), (0, "0"), (1, "0")])
def test_megabytes(size, shown):
    assert m.megabytes(size) == shown


@pytest.mark.parametrize("address, automatic, bounced, reason", [
    ("cheng.li@example.com", True, True, "bounced_address"),
    ("cheng.li@example.com", False, True, "bounced_address"),  # an agent's reply to it would bounce too
    ("cheng.li@example.com", True, False, None),
    (None, True, True, "no_address"),
])
def test_no_mail_to_a_bounced_address(address, automatic, bounced, reason):
    assert ls.skip_reason(address, automatic=automatic, bounced=bounced) == reason


@pytest.mark.parametrize("ticket_id, recipients, mailed, suppress, ignore", [
    ("TM-10001", ["Cheng.Li@example.com"], {"cheng.li@example.com"}, ["Cheng.Li@example.com"], []),
    (None, ["cheng.li@example.com"], {"cheng.li@example.com"}, [], ["cheng.li@example.com"]),  # forged: no ticket
    ("TM-10001", ["victim@example.com", "cheng.li@example.com"], {"cheng.li@example.com"},
     ["cheng.li@example.com"], ["victim@example.com"]),  # only the address we mailed about that ticket
    ("TM-10001", ["cheng.li@example.com"], set(), [], ["cheng.li@example.com"]),
])
def test_a_bounce_is_believed_only_for_addresses_we_mailed_about_its_ticket(ticket_id, recipients, mailed,
                                                                            suppress, ignore):
    assert m.trusted_bounce(ticket_id, recipients, mailed) == (suppress, ignore)
