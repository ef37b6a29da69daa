"""Threading against a real Dovecot, RabbitMQ vhost and Redis: which mail follows up which ticket."""
import json
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import make_msgid

import pytest
import structlog
from nameko.standalone.events import event_dispatcher

from shared import events as ev
from shared import mail_tokens
from shared.roster import hash_password
import structlog

from services.intake_email import flood, intake
from services.intake_email.config import (DATA_DIR_CONFIG_KEY, FLOOD_MAX_CONFIG_KEY, MAILBOXES_CONFIG_KEY,
                                          REOPEN_DAYS_CONFIG_KEY, ROSTER_FILE_CONFIG_KEY,
                                          SENDER_FROM_REPLY_TO_CONFIG_KEY, TOKEN_SECRET_CONFIG_KEY)
from services.intake_email.service import IntakeEmailService

from .conftest import wait_until

SECRET = "service-test-token-secret"
SUPPORT = "support@ticketmesh.test"
CUSTOMER = "Zhang Wei <zhang.wei@example.com>"
AGENT_EMAIL = "li.na@agents.ticketmesh.test"


def mail(subject, body="hello", *, sender=CUSTOMER, to=SUPPORT, cc=None, in_reply_to=None, references=None,
         message_id=None):
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Message-ID"] = message_id or make_msgid(domain="example.com")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references
    msg.set_content(body)
    return msg.as_bytes()


class Events:
    """Everything intake_email publishes, in order."""

    def __init__(self, listener):
        self.listener = listener
        self.seen = []

    def next(self, event_type, timeout=15.0):
        def record(kind, body):
            self.seen.append((kind, body))
            return kind == event_type

        return self.listener.wait_for(record, timeout=timeout)[1]

    def of(self, event_type):
        return [b for t, b in self.seen if t == event_type]


@pytest.fixture
def roster_file(tmp_path):
    path = tmp_path / "roster.yaml"
    path.write_text(f"""agents:
  - agent_id: li.na
    name: 李娜
    password_hash: {hash_password("x", salt=b"0123456789abcdef")}
    email: {AGENT_EMAIL}
""", encoding="utf-8")
    return str(path)


@pytest.fixture
def start(service_container, mailbox, tmp_path, roster_file):
    def run(**config):
        container = service_container(IntakeEmailService, **{
            MAILBOXES_CONFIG_KEY: [mailbox.settings()], DATA_DIR_CONFIG_KEY: str(tmp_path),
            TOKEN_SECRET_CONFIG_KEY: SECRET, ROSTER_FILE_CONFIG_KEY: roster_file, **config})
        container.start()
        return container

    return run


@pytest.fixture
def events(event_listener):
    return Events(event_listener("intake_email"))


@pytest.fixture
def resolve(amqp_uri, mailbox):
    dispatch = event_dispatcher({"AMQP_URI": amqp_uri})

    def send(ticket_id, *, ago):
        body = ev.make_event(ev.AGENT_DESK, ev.TICKET_RESOLVED, now=datetime.now(timezone.utc) - ago,
                             trace_id="t-" + ticket_id, ticket_id=ticket_id, agent_id="li.na", channel="email")
        dispatch(ev.AGENT_DESK, ev.TICKET_RESOLVED, body)
        wait_until(lambda: ticket_id in mailbox.store.thread_lookups("msgid", [], sender="", tickets=[ticket_id])
                   .resolved, what="resolution recorded")

    return send


def open_ticket(mailbox, events, subject="发票抬头错误", **kw):
    mailbox.append(mail(subject, "你好，发票抬头写错了。", **kw))
    return events.next("ticket_received")["ticket_id"]


def logged(logs, event):
    return [entry for entry in logs if entry["event"] == event]


def test_reply_with_only_our_plus_address_follows_up(start, mailbox, events):
    start()
    ticket = open_ticket(mailbox, events)
    # A client that dropped In-Reply-To, References and the tag; it still sent to our Reply-To.
    with structlog.testing.capture_logs() as logs:
        mailbox.append(mail("Re: invoice", "still wrong",
                            to=mail_tokens.reply_address(SECRET.encode(), ticket, SUPPORT)))
        follow_up = events.next("message_received")
    assert (follow_up["ticket_id"], follow_up["text"]) == (ticket, "still wrong")
    assert [e["by"] for e in logged(logs, "mail_threaded")] == ["plus_address"]


def test_outlook_reply_with_only_references_to_our_mail_follows_up(start, mailbox, events):
    start()
    ticket = open_ticket(mailbox, events)
    ours = mail_tokens.message_id(SECRET.encode(), ticket, "n1", "ticketmesh.test")
    mailbox.append(mail("RE: invoice", "see below", references=f"<elsewhere@example.org> {ours}"))
    assert events.next("message_received")["ticket_id"] == ticket


def test_forged_plus_address_opens_a_new_ticket(start, mailbox, events):
    start()
    ticket = open_ticket(mailbox, events)
    forged = mail_tokens.reply_address(b"guessed-secret-value!", ticket, SUPPORT)
    mailbox.append(mail("Re: invoice", sender="Mallory <mallory@evil.test>", to=forged))
    assert events.next("ticket_received")["ticket_id"] != ticket
    assert events.of("message_received") == []


def test_stranger_quoting_the_subject_tag_gets_a_new_ticket(start, mailbox, events):
    start()
    ticket = open_ticket(mailbox, events)
    with structlog.testing.capture_logs() as logs:
        mailbox.append(mail(f"Re: [#{ticket}] 发票抬头错误", "let me in", sender="Mallory <mallory@evil.test>"))
        stranger = events.next("ticket_received")
    assert [(e["tag"], e["why"]) for e in logged(logs, "mail_subject_tag_ignored")] == [
        (ticket, "sender_not_participant")]
    assert stranger["ticket_id"] != ticket
    assert stranger["customer"]["email"] == "mallory@evil.test"
    assert events.of("message_received") == []


@pytest.mark.parametrize("sender", [CUSTOMER, "Li Si <li.si@example.com>"], ids=["customer", "cc-colleague"])
def test_participant_with_the_subject_tag_and_no_headers_follows_up(start, mailbox, events, sender):
    start()
    ticket = open_ticket(mailbox, events, cc="Li Si <li.si@example.com>")
    mailbox.append(mail(f"[#{ticket}] one more thing", "also the date", sender=sender))
    follow_up = events.next("message_received")
    assert follow_up["ticket_id"] == ticket
    assert follow_up["text"] == "also the date"


@pytest.mark.parametrize("resolved_ago,reopens", [(timedelta(hours=1), True), (timedelta(days=2), False)],
                         ids=["within-window", "after-window"])
def test_follow_up_to_a_resolved_ticket(start, mailbox, events, resolve, resolved_ago, reopens):
    start(**{REOPEN_DAYS_CONFIG_KEY: 1.0})
    ticket = open_ticket(mailbox, events)
    resolve(ticket, ago=resolved_ago)
    ours = mail_tokens.message_id(SECRET.encode(), ticket, "n1", "ticketmesh.test")
    mailbox.append(mail("Re: [#%s] 发票抬头错误" % ticket, "又错了", in_reply_to=ours, references=ours))
    if reopens:
        assert events.next("message_received")["ticket_id"] == ticket
        # that follow-up reopened it: its resolution no longer counts
        wait_until(lambda: ticket not in mailbox.store.thread_lookups("msgid", [], sender="", tickets=[ticket])
                   .resolved, what="resolution cleared")
    else:
        new = events.next("ticket_received")
        assert new["ticket_id"] != ticket
        assert new["linked_ticket_id"] == ticket
        assert new["subject"] == f"Re: [#{ticket}] 发票抬头错误"
        assert events.of("message_received") == []


def test_with_sender_from_reply_to_a_web_form_mail_is_filed_for_the_person_in_reply_to(start, mailbox, events):
    start(**{SENDER_FROM_REPLY_TO_CONFIG_KEY: True})
    form = mail("订单咨询", sender="Web Form <noreply@shop.example>")
    form = form.replace(b"Subject:", "Reply-To: 李雷 <li.lei@example.cn>\r\nSubject:".encode(), 1)
    mailbox.append(form)
    ticket = events.next("ticket_received")
    assert (ticket["customer"]["email"], ticket["customer"]["name"]) == ("li.lei@example.cn", "李雷")


def test_agent_forwarding_a_customers_mail_opens_the_ticket_for_the_customer(start, mailbox, events):
    start()
    mailbox.append(mail("Fwd: 订单还没到", "请跟进\n\n------------------ 原始邮件 ------------------\n"
                        "发件人: \"张三\"<zhangsan@b.cn>;\n发送时间: 2026年3月2日\n主题: 订单还没到\n\n订单还没到。",
                        sender=f"李娜 <{AGENT_EMAIL}>"))
    ticket = events.next("ticket_received")
    assert ticket["customer"]["email"] == "zhangsan@b.cn"
    assert ticket["customer"]["name"] == "张三"
    assert ticket["source"]["forwarded_by"] == "li.na"


def claimed_key(message_id):
    return intake.KIND_MESSAGE_ID, intake.message_id_key(message_id.strip("<>"))


def participants(mailbox, ticket, address):
    return ticket in mailbox.store.thread_lookups("msgid", [], sender=address, tickets=[ticket]).participant_of


def test_a_crash_between_claiming_a_linked_ticket_and_publishing_it_still_publishes_it_linked(
        start, mailbox, events, resolve):
    start(**{REOPEN_DAYS_CONFIG_KEY: 1.0})
    old = open_ticket(mailbox, events)
    resolve(old, ago=timedelta(days=2))
    ours = mail_tokens.message_id(SECRET.encode(), old, "n1", "ticketmesh.test")
    late = mail("Re: 发票抬头错误", "还是错的", cc="Li Si <li.si@example.com>", in_reply_to=ours,
                message_id="<late-reply@example.com>")
    # What the first attempt left when it died: the link planned, the number claimed, nothing more.
    kind, key = claimed_key("<late-reply@example.com>")
    mailbox.store.plan_link(kind, key, old)
    claimed, _ = mailbox.store.claim_ticket(kind, key)

    mailbox.append(late)  # the re-fetch
    new = events.next("ticket_received")
    assert (new["ticket_id"], new["linked_ticket_id"]) == (claimed, old)
    assert participants(mailbox, claimed, "zhang.wei@example.com")
    assert participants(mailbox, claimed, "li.si@example.com")


def test_a_crash_between_claiming_a_follow_up_and_publishing_it_still_adds_its_sender_to_the_ticket(
        start, mailbox, events):
    start()
    ticket = open_ticket(mailbox, events)
    ours = mail_tokens.message_id(SECRET.encode(), ticket, "n1", "ticketmesh.test")
    colleague = "Li Si <li.si@example.com>"
    answer = mail("Re: 发票抬头错误", "我是张伟的同事", sender=colleague, in_reply_to=ours,
                  message_id="<colleague-1@example.com>")
    kind, key = claimed_key("<colleague-1@example.com>")
    assert mailbox.store.claim_reply(kind, key, ticket) == ticket  # ... and the process died here

    mailbox.append(answer)
    assert events.next("message_received")["ticket_id"] == ticket
    assert participants(mailbox, ticket, "li.si@example.com")
    # So the subject tag alone now files the colleague's mail too.
    mailbox.append(mail(f"[#{ticket}] 补充", "附上订单号", sender=colleague))
    assert events.next("message_received")["ticket_id"] == ticket


def test_a_claimed_message_is_republished_even_when_its_sender_is_now_over_the_flood_limit(
        start, mailbox, events, tmp_path):
    start(**{FLOOD_MAX_CONFIG_KEY: 1})
    flooder = "robot.user@example.com"
    claimed_mail = mail("批量请求 1", sender=flooder, message_id="<flood-claimed@example.com>")
    kind, key = claimed_key("<flood-claimed@example.com>")
    mailbox.store.plan_link(kind, key, None)
    claimed, _ = mailbox.store.claim_ticket(kind, key)  # claimed, then the crash
    now = datetime.now(timezone.utc).timestamp()
    for n in range(2):  # the sender's later mail (handled by the replica that took over) fills the window
        mailbox.store.record_sender_message(flood.sender_hash(flooder), f"later-{n}", now=now, window_seconds=600)

    mailbox.append(claimed_mail)
    assert events.next("ticket_received")["ticket_id"] == claimed
    throttled = mailbox.append(mail("批量请求 9", sender=flooder))  # a new one is still throttled
    wait_until(lambda: mailbox.checkpoint_uid() == throttled, what="new flood mail handled")
    [note] = (tmp_path / "quarantine" / "support").glob(f"*-{throttled}.json")
    assert json.loads(note.read_text())["reason"].startswith("flood: 3 messages from this sender")


@pytest.mark.parametrize("how", ["signed_message_id", "plus_address"])
def test_mail_naming_a_ticket_intake_no_longer_knows_opens_a_new_ticket_linked_to_it(start, mailbox, events, how):
    start()
    forgotten = "TM-99999"  # e.g. its records expired long ago; agent_desk holds it no more either
    if how == "signed_message_id":
        reply = mail("Re: 旧工单", "还记得我吗", in_reply_to=mail_tokens.message_id(SECRET.encode(), forgotten, "n1",
                                                                                   "ticketmesh.test"))
    else:
        reply = mail("Re: 旧工单", "还记得我吗", to=mail_tokens.reply_address(SECRET.encode(), forgotten, SUPPORT))
    with structlog.testing.capture_logs() as logs:
        mailbox.append(reply)
        new = events.next("ticket_received")
    assert new["ticket_id"] != forgotten and new["linked_ticket_id"] == forgotten
    assert events.of("message_received") == []
    linked = [e for e in logs if e["event"] == "mail_opens_linked_ticket"]
    assert [(e["linked_ticket_id"], e["why"]) for e in linked] == [(forgotten, "unknown_ticket")]
