from datetime import timezone
from email import message_from_bytes
from zoneinfo import ZoneInfo

import pytest

from shared import mail_tokens
from services.intake_email import automatic, thread_match
from services.notifier import loop_safety as ls
from services.notifier import messages as m
from services.notifier.tests.factories import NOW, agent_replied, parse, sla_breached, ticket_received

SENDER = m.Sender("support@ticketmesh.test", "TicketMesh 客服")


def _ack(**kw):
    ticket = parse("intake_email", "ticket_received", ticket_received(**kw))
    return m.ticket_ack(ticket, sender=SENDER, notification="n1", now=NOW)


def test_chinese_ack_carries_ticket_tag_and_decodes_back():
    mail = _ack()
    assert mail["Subject"] == "[#TM-10001] 我们已收到您的请求：发票抬头错误"
    body = mail.get_content()
    assert "工单号为 TM-10001" in body and "张伟" in body
    # The tag must survive encoding in plain ASCII, so intake can match it in the raw header.
    assert "[#TM-10001]" in mail.as_string().split("\n\n", 1)[0]


def test_english_ack_for_english_speakers():
    mail = _ack(name="Sam", language="en-GB", subject="Cannot log in")
    assert mail["Subject"] == "[#TM-10001] We received your request: Cannot log in"
    assert "opened\nticket TM-10001" in mail.get_content()


def test_language_unknown_falls_back_to_the_text():
    assert m.choose_locale(None, "请问怎么退货") == m.ZH_CN
    assert m.choose_locale(None, "how do I return this") == m.EN
    assert m.choose_locale("zh-TW") == m.ZH_CN


def test_ack_headers_are_loop_safe_and_ours():
    mail = _ack(source={"message_id": "<CAF+abc@mail.example.com>"})
    assert mail["Auto-Submitted"] == "auto-replied"
    assert mail["X-Auto-Response-Suppress"] == "All"
    assert mail["Precedence"] == "bulk"
    assert mail["Message-ID"].startswith("<tm.TM-10001.n1.") and mail["Message-ID"].endswith("@ticketmesh.test>")
    assert mail["From"].addresses[0].addr_spec == "support@ticketmesh.test"
    assert mail["Reply-To"].addresses[0].addr_spec.startswith("support+TM-10001.")
    assert mail["In-Reply-To"] == "<CAF+abc@mail.example.com>"
    assert mail["To"].addresses[0].display_name == "张伟"


def test_ack_never_echoes_the_customer_text():
    # An auto-reply quoting arbitrary text to a (possibly forged) sender is a spam relay.
    assert "发票抬头写错了" not in _ack().get_content()


def test_agent_reply_is_personal_and_threaded():
    reply = parse("agent_desk", "agent_replied", agent_replied())
    thread = m.Thread(subject="Re: 发票抬头错误", customer_message_id="<c@example.com>",
                      ack_message_id="<tm.TM-10001.n1@ticketmesh.test>")
    mail = m.agent_reply(reply, agent_name="李娜", thread=thread, sender=SENDER, notification="n2", now=NOW)
    assert mail["Subject"] == "回复：[#TM-10001] 发票抬头错误"
    assert mail["Auto-Submitted"] is None and mail["Precedence"] is None
    assert mail["In-Reply-To"] == "<tm.TM-10001.n1@ticketmesh.test>"
    assert mail["References"] == "<c@example.com> <tm.TM-10001.n1@ticketmesh.test>"
    assert mail.get_content().startswith("您好，发票已重新开具，请查收。\n")
    assert "李娜" in mail.get_content()


def test_agent_reply_without_known_thread_still_has_the_tag():
    reply = parse("agent_desk", "agent_replied", agent_replied(language="en", text="Done."))
    mail = m.agent_reply(reply, agent_name="Li Na", thread=m.Thread(), sender=SENDER, notification="n3", now=NOW)
    assert mail["Subject"] == "[#TM-10001] Reply to your request"
    assert mail["In-Reply-To"] is None


def test_sla_notice_to_supervisor():
    breach = parse("sla_watcher", "sla_breached", sla_breached())
    mail = m.sla_breach_notice(breach, to="boss@ticketmesh.test", locale="zh-CN", assignee_name="李娜", sender=SENDER,
                               notification="n4", now=NOW, zone=ZoneInfo("Asia/Shanghai"))
    assert mail["Subject"] == "[#TM-10001] SLA 已超时：首次响应（P2-standard-email）"
    assert mail["Auto-Submitted"] == "auto-generated" and mail["Precedence"] == "bulk"
    body = mail.get_content()
    assert "2026-03-02 16:29:00 CST" in body  # due_at 08:29 UTC shown in Shanghai time
    assert "李娜（li.na）" in body and "60 分钟" in body
    english = m.sla_breach_notice(breach, to="boss@ticketmesh.test", locale="en", assignee_name=None, sender=SENDER,
                                  notification="n4", now=NOW, zone=timezone.utc)
    assert "Assignee: li.na (li.na)" in english.get_content()


@pytest.mark.parametrize("address", [
    "noreply@example.com", "no-reply@example.com", "NoReply-billing@shop.example", "no-reply.alerts@x.example",
    "MAILER-DAEMON@mx.example.com", "postmaster@example.com", "root@example.com", "abuse@example.com",
])
def test_no_automatic_mail_to_system_addresses(address):
    assert ls.skip_reason(address, automatic=True) == "system_address"
    assert ls.skip_reason(address, automatic=False) is None  # a person's reply may still go out


@pytest.mark.parametrize("address,reason", [
    (None, "no_address"), ("", "no_address"), ("not-an-address", "invalid_address"),
    ("x@y\r\nBcc: victim@example.com", "invalid_address"), ("zhang.wei@example.com", None),
    ("rooted@example.com", None), ("noreplyfan@", "invalid_address"),
])
def test_skip_reasons(address, reason):
    assert ls.skip_reason(address, automatic=True) == reason


def test_notification_ids_are_deterministic_per_event_and_kind():
    assert m.notification_id("e1", m.KIND_TICKET_ACK) == m.notification_id("e1", m.KIND_TICKET_ACK)
    assert m.notification_id("e1", m.KIND_TICKET_ACK) != m.notification_id("e1", m.KIND_SLA_BREACHED)
    assert m.notification_id("e1", m.KIND_TICKET_ACK) != m.notification_id("e2", m.KIND_TICKET_ACK)


@pytest.mark.parametrize("raw,clean", [
    ("Re: RE: 回复：发票", "发票"), ("答复: [#TM-10001] 发票", "发票"), ("Fwd: a\r\n b", "a b"), ("", ""),
])
def test_clean_subject(raw, clean):
    assert m.clean_subject(raw) == clean


TOKEN_SECRET = b"notifier-test-token-secret"
SIGNED = m.Sender("support@ticketmesh.test", "TicketMesh 客服", TOKEN_SECRET)


def _all_kinds(sender):
    ticket = parse("intake_email", "ticket_received", ticket_received(ticket_id="TM-10042"))
    reply = parse("agent_desk", "agent_replied", agent_replied(ticket_id="TM-10042"))
    breach = parse("sla_watcher", "sla_breached", sla_breached(ticket_id="TM-10042"))
    nid = m.notification_id("e1", "ticket_ack")  # a real one: 32 hex characters
    return {
        "ticket_ack": m.ticket_ack(ticket, sender=sender, notification=nid, now=NOW),
        "agent_reply": m.agent_reply(reply, agent_name="李娜", thread=m.Thread(), sender=sender,
                                     notification="4567ef", now=NOW),
        "sla_breached": m.sla_breach_notice(breach, to="boss@ticketmesh.test", locale="en", assignee_name=None,
                                            sender=sender, notification="89ab", now=NOW, zone=timezone.utc),
    }


@pytest.mark.parametrize("kind", ["ticket_ack", "agent_reply", "sla_breached"])
def test_every_mail_carries_signed_tokens_for_its_ticket(kind):
    mail = _all_kinds(SIGNED)[kind]
    assert mail_tokens.ticket_from_message_id(TOKEN_SECRET, mail["Message-ID"]) == "TM-10042"
    assert mail_tokens.ticket_from_address(TOKEN_SECRET, mail["Reply-To"].addresses[0].addr_spec) == "TM-10042"
    assert "[#TM-10042]" in mail["Subject"]
    assert "\nMessage-ID: <tm.TM-10042." in mail.as_string()  # on one line, not folded
    # ... which another key cannot verify, and intake's loop check still recognises as ours
    assert mail_tokens.ticket_from_message_id(b"some-other-secret-value", mail["Message-ID"]) is None
    assert automatic.classify(message_from_bytes(mail.as_bytes()), our_address="support@ticketmesh.test").kind == "loop"


@pytest.mark.parametrize("kind", ["ticket_ack", "agent_reply", "sla_breached"])
@pytest.mark.parametrize("how", ["in_reply_to", "outlook_references_only", "plus_address_only"])
def test_intake_threads_a_reply_to_our_mail_onto_its_ticket(kind, how):
    ours = _all_kinds(SIGNED)[kind]
    mid = ours["Message-ID"].strip("<>")
    reply_to = ours["Reply-To"].addresses[0].addr_spec
    headers = {
        "in_reply_to": dict(in_reply_to=(mid,), references=(mid,), recipients=(reply_to,)),
        "outlook_references_only": dict(in_reply_to=(), references=("x@customer.example", mid), recipients=()),
        "plus_address_only": dict(in_reply_to=(), references=(), recipients=(reply_to.lower(),)),
    }[how]
    facts = thread_match.ThreadFacts(from_email="zhang.wei@example.com", subject=f"Re: {ours['Subject']}",
                                     message_id="reply@example.com", **headers)
    decision = thread_match.decide(facts, TOKEN_SECRET, thread_match.Lookups())
    assert decision.ticket_id == "TM-10042"
