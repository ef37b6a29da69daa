"""What customers hear after they write, against a real SMTP sink, RabbitMQ vhost and Redis:
the acknowledgement with its expected response time (waiting for the classification, or not
for ever), "waiting on you", the resolution with its survey, and chat replies by mail (only as intake_chat's
missed replies).

TM_PREFETCH=1: one queue's events are handled in order, so a later "sentinel" event's mail
proves the events before it on the same queue were handled.
"""
from __future__ import annotations

from datetime import timedelta

from services.notifier.tests.factories import NOW, agent_replied, ticket_received
from services.notifier.tests.update_factories import (chat_message, chat_reply_missed, csat_submitted, status_changed,
                                                      ticket_classified, ticket_resolved)
from shared import customer_links
from shared.testing.asyncio_helpers import wait_until

from .update_fixtures import BASE_URL, LINK_SECRET, Clock, make_notifier, mails_to, one_mail_to  # noqa: F401

CUSTOMER = "zhang.wei@example.com"


def _link_token(text: str, purpose: str) -> str:
    prefix = f"{BASE_URL}/{purpose}/"
    line = next(line for line in text.splitlines() if line.startswith(prefix))
    return line.removeprefix(prefix)


async def test_ack_waits_for_the_classification_and_says_when_to_expect_an_answer(sink, make_notifier, publish,
                                                                                   redis_client):
    await sink.start()
    await make_notifier(Clock(NOW + timedelta(seconds=2)))
    await publish("intake_email", "ticket_received", ticket_received("TM-20001", source={"message_id": "<q@x.example>"}))
    await wait_until(lambda: redis_client.zscore("tm:notifier:ack_due", "TM-20001"), message="ack scheduled")
    assert sink.messages() == []  # nothing before the classification
    await publish("dispatcher", "ticket_classified", ticket_classified("TM-20001", priority="P1"))
    ack = await one_mail_to(sink, CUSTOMER, "ack after classification")
    # P1 email: 15 minutes after 08:30 UTC, written in the mail zone (Asia/Shanghai)
    assert "我们预计最晚于 2026-03-02 16:45 (UTC+08:00) 前给您首次回复" in ack.text
    token = _link_token(ack.text, "status")
    assert customer_links.read_token(LINK_SECRET.encode(), token, "status", now=NOW).ticket_id == "TM-20001"
    assert ack.headers["In-Reply-To"] == "<q@x.example>"
    # no fallback left behind (removed just after the send)
    await wait_until(lambda: redis_client.zscore("tm:notifier:ack_due", "TM-20001") is None, message="ack unscheduled")


async def test_classification_arriving_first_still_gives_one_ack_with_the_time(sink, make_notifier, publish,
                                                                             redis_client):
    await sink.start()
    await make_notifier(Clock(NOW + timedelta(seconds=2)))
    await publish("dispatcher", "ticket_classified", ticket_classified("TM-20002", priority="P3"))
    await wait_until(lambda: redis_client.hget("tm:notifier:contact:TM-20002", "priority"), message="classification kept")
    await publish("intake_email", "ticket_received", ticket_received("TM-20002"))
    ack = await one_mail_to(sink, CUSTOMER, "ack")
    # P3: 4 hours of business time on cn-support (deploy/config/sla.yaml since the SLA engine):
    # 16:30 Monday in Shanghai leaves 1.5 h that day, the other 2.5 h run from 09:00 Tuesday.
    assert "2026-03-03 11:30 (UTC+08:00)" in ack.text


async def test_without_classification_the_ack_goes_out_after_the_wait_promising_no_time(sink, make_notifier, publish,
                                                                                        redis_client):
    await sink.start()
    clock = Clock(NOW + timedelta(seconds=2))
    _, notifier = await make_notifier(clock)
    await publish("intake_email", "ticket_received", ticket_received("TM-20003"))
    await wait_until(lambda: redis_client.hget("tm:notifier:contact:TM-20003", "channel"), message="contact kept")
    await notifier.sweep_acks()
    assert sink.messages() == []  # not due yet
    clock.now = NOW + timedelta(seconds=2 + 61)  # the wait runs from when the notifier saw the ticket
    await notifier.sweep_acks()  # (the service's own sweeper, on the same clock, may be first: one mail either way)
    ack = await one_mail_to(sink, CUSTOMER, "fallback ack")
    assert "客服人员会尽快回复您" in ack.text and "预计" not in ack.text
    # The classification comes late: nothing more goes out (a sentinel on the same queue proves it was handled).
    await publish("dispatcher", "ticket_classified", ticket_classified("TM-20003"))
    await publish("intake_email", "ticket_received", ticket_received("TM-20004", email="sentinel@example.com"))
    await publish("dispatcher", "ticket_classified", ticket_classified("TM-20004"))
    await one_mail_to(sink, "sentinel@example.com", "sentinel ack")
    assert len(mails_to(sink, CUSTOMER)) == 1


async def test_waiting_on_customer_is_mailed_threaded_other_statuses_are_not(sink, make_notifier, publish):
    await sink.start()
    await make_notifier(Clock(NOW), TM_NOTIFY_ACK_WAIT_SECONDS="0")
    await publish("intake_email", "ticket_received", ticket_received("TM-20010", source={"message_id": "<q@x.example>"}))
    ack = await one_mail_to(sink, CUSTOMER, "ack")
    await publish("agent_desk", "ticket_status_changed", status_changed("TM-20010", "on_hold"))
    await publish("agent_desk", "ticket_status_changed", status_changed("TM-20010", "waiting_on_customer"))
    mails = await wait_until(lambda: mails_to(sink, CUSTOMER)[1:], message="waiting notice")
    assert len(mails) == 1
    waiting = mails[0]
    assert waiting.subject == "[#TM-20010] 等待您的回复：发票抬头错误"
    assert waiting.headers["In-Reply-To"] == ack.headers["Message-ID"]
    assert waiting.headers["Auto-Submitted"] == "auto-generated"


async def test_resolution_asks_for_one_survey_and_never_for_spam_merged_or_auto_closed(sink, make_notifier, publish,
                                                                                         redis_client):
    await sink.start()
    await make_notifier(Clock(NOW), TM_NOTIFY_ACK_WAIT_SECONDS="0")
    for n, address in ((20020, CUSTOMER), (20021, "spam@example.com"), (20022, "merged@example.com"),
                       (20023, "idle@example.com")):
        await publish("intake_email", "ticket_received", ticket_received(f"TM-{n}", email=address))
    await wait_until(lambda: len(sink.messages()) == 4, message="four acks")

    await publish("agent_desk", "ticket_resolved", ticket_resolved("TM-20020"))
    solved = (await wait_until(lambda: mails_to(sink, CUSTOMER)[1:], message="resolution mail"))[0]
    assert solved.subject == "[#TM-20020] 您的请求已解决：发票抬头错误"
    token = _link_token(solved.text, "csat")
    assert customer_links.read_token(LINK_SECRET.encode(), token, "csat", now=NOW).ticket_id == "TM-20020"
    html = solved.message.get_body(("html",)).get_content()
    assert html.count(f"{BASE_URL}/csat/{token}?score=") == 5

    await publish("agent_desk", "ticket_resolved", ticket_resolved("TM-20021", resolution="spam"))
    await publish("agent_desk", "ticket_resolved", ticket_resolved("TM-20022", resolution="merged"))
    await publish("agent_desk", "ticket_resolved", ticket_resolved("TM-20023", resolution="auto_closed"))
    closed = (await wait_until(lambda: mails_to(sink, "idle@example.com")[1:], message="auto-closed mail"))[0]
    assert "/csat/" not in closed.text and "/status/" in closed.text
    assert len(mails_to(sink, "spam@example.com")) == 1 and len(mails_to(sink, "merged@example.com")) == 1  # acks only

    # The customer answers; the ticket is reopened and solved again: no second survey.
    await publish("intake_chat", "csat_submitted", csat_submitted("TM-20020"))
    await wait_until(lambda: redis_client.hget("tm:notifier:contact:TM-20020", "csat") == "answered",
                     message="answer noted")
    await publish("agent_desk", "ticket_resolved", ticket_resolved("TM-20020", event_id="second-resolve"))
    again = (await wait_until(lambda: mails_to(sink, CUSTOMER)[2:], message="second resolution"))[0]
    assert "/csat/" not in again.text and "/status/" in again.text


async def test_chat_replies_are_mailed_only_through_intake_chats_missed_reply_signal(sink, make_notifier, publish,
                                                                                     redis_client):
    """The notifier no longer guesses whether a chat customer left (their silence): intake_chat
    knows which replies no widget confirmed and says so in ``chat_reply_missed``. A chat reply is
    mailed once, by that one mechanism, however long the customer has been silent."""
    await sink.start()
    clock = Clock(NOW + timedelta(minutes=1))
    await make_notifier(clock)
    visitor = "chat.visitor@example.com"

    async def sentinel(name: str) -> None:
        """An email reply after the chat events: once its mail is in, those before it were handled."""
        address = f"sentinel-{name}@example.com"
        await publish("agent_desk", "agent_replied", agent_replied("TM-29999", email=address, reply_id=name))
        await wait_until(lambda: mails_to(sink, address), message=f"sentinel {name}")

    await publish("intake_chat", "ticket_received",
                  ticket_received("TM-20030", channel="chat", email=visitor, subject="在线咨询：退款"))
    await wait_until(lambda: redis_client.hget("tm:notifier:contact:TM-20030", "channel"), message="chat contact kept")
    await publish("intake_chat", "message_received", chat_message("TM-20030", at=NOW + timedelta(minutes=5)))
    clock.now = NOW + timedelta(hours=3)  # hours of silence: the old heuristic would have mailed the reply
    await publish("agent_desk", "agent_replied", agent_replied("TM-20030", channel="chat", email=visitor,
                                                               reply_id="c1", text="退款已处理。"))
    await publish("agent_desk", "ticket_status_changed", status_changed("TM-20030", "waiting_on_customer"))
    await sentinel("c1")
    assert mails_to(sink, visitor) == []  # no reply mail, no "waiting for you" (and chat customers get no ack)
    assert redis_client.hget("tm:notifier:contact:TM-20030", "last_customer_at") is None

    missed = chat_reply_missed("TM-20030", to=visitor, text="退款已处理。", up_to_seq=2)
    await publish("intake_chat", "chat_reply_missed", missed)
    await publish("intake_chat", "chat_reply_missed", missed)  # redelivered: the same mail
    mail = await one_mail_to(sink, visitor, "missed chat reply by mail")
    assert mail.subject == "[#TM-20030] 客服回复了您的在线咨询：在线咨询：退款" and "退款已处理。" in mail.text
    assert "Auto-Submitted" not in mail.headers  # people's replies: not marked automatic
    await sentinel("missed")
    assert len(mails_to(sink, visitor)) == 1
