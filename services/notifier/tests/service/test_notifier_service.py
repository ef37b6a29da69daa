"""The notifier against a real SMTP sink, a real RabbitMQ vhost and real Redis.

Tests run with TM_PREFETCH=1 and one sender (TM_NOTIFIER_SENDERS=1), so one queue's messages
are handled one after another and queued mail goes out in that order: when a later "sentinel"
mail arrives, every event published before it on the same queue is done. Retries are fast
(base 0.05 s, cap 0.2 s) so a deferred mail is tried again at once.
"""
from __future__ import annotations

from services.notifier import messages
from services.notifier.tests.factories import agent_replied, sla_breached, ticket_received
from shared.testing.asyncio_helpers import wait_until
from shared.testing.plugin import AsyncEventListener

from services.notifier.tests.helpers import mails_to, outbox_record


async def test_new_ticket_is_acknowledged_once_even_when_redelivered(sink, notifier, publish, amqp_uri):
    await sink.start()
    body = ticket_received("TM-10001", source={"message_id": "<first@mail.example.com>"})
    async with AsyncEventListener(amqp_uri, "notifier", ["notification_sent"]) as sent:
        await publish("intake_email", "ticket_received", body)
        acks = await wait_until(lambda: mails_to(sink, "zhang.wei@example.com"), message="ack in the sink")
        _, announced = await sent.wait_for(lambda _t, b: b["ticket_id"] == "TM-10001")
    ack = acks[0]
    assert ack.subject == "[#TM-10001] 我们已收到您的请求：发票抬头错误"
    assert ack.headers["Auto-Submitted"] == "auto-replied"
    assert ack.headers["In-Reply-To"] == "<first@mail.example.com>"
    assert ack.headers["Message-ID"].startswith("<tm.TM-10001.")
    assert announced["recipient"] == "z***@example.com" and announced["kind"] == "ticket_ack"

    await publish("intake_email", "ticket_received", body)  # the same event again (same event_id)
    await publish("intake_email", "ticket_received", ticket_received("TM-10002", email="sentinel@example.com"))
    await wait_until(lambda: mails_to(sink, "sentinel@example.com"), message="sentinel mail")
    assert len(mails_to(sink, "zhang.wei@example.com")) == 1


async def test_no_ack_without_an_address_to_system_addresses_or_to_unverified_chat_addresses(sink, notifier, publish):
    await sink.start()
    await publish("intake_email", "ticket_received", ticket_received("TM-10003", email=None))
    await publish("intake_email", "ticket_received", ticket_received("TM-10004", email="noreply@shop.example"))
    # Typed into the chat widget by anyone: an automatic mail there would make us a spam relay.
    await publish("intake_chat", "ticket_received", ticket_received("TM-10007", channel="chat", email="victim@example.com"))
    await publish("intake_email", "ticket_received", ticket_received("TM-10005", email="sentinel@example.com",
                                                                      language="en", name="Ann"))
    sentinel = await wait_until(lambda: sink.messages(), message="sentinel mail")
    assert [m.envelope_to for m in sink.messages()] == [["sentinel@example.com"]]
    assert sentinel[0].subject.startswith("[#TM-10005] We received your request")


async def test_agent_reply_is_mailed_threaded_on_the_ack(sink, notifier, publish):
    await sink.start()
    await publish("intake_email", "ticket_received", ticket_received("TM-10006", source={"message_id": "<q@example.com>"}))
    ack = (await wait_until(lambda: sink.messages(), message="ack"))[0]
    await publish("agent_desk", "agent_replied", agent_replied("TM-10006", channel="chat", reply_id="chat-reply"))
    await publish("agent_desk", "agent_replied", agent_replied("TM-10006", text="您好，发票已重新开具。\n祝好"))
    replies = await wait_until(lambda: sink.messages()[1:], message="reply mail")
    reply = replies[0]
    assert len(sink.messages()) == 2  # the chat reply is not mailed (intake_chat relays it)
    assert reply.subject == "回复：[#TM-10006] 发票抬头错误"
    assert reply.text.startswith("您好，发票已重新开具。\n祝好\n") and "李娜" in reply.text
    assert "Auto-Submitted" not in reply.headers
    assert reply.headers["In-Reply-To"] == ack.headers["Message-ID"]
    # signed ids are long: References is folded across lines, as RFC 5322 allows
    assert reply.headers["References"].split() == ["<q@example.com>", ack.headers["Message-ID"]]


async def test_a_quick_second_reply_answers_the_first_even_before_the_first_went_out(sink, notifier, publish):
    await publish("intake_email", "ticket_received", ticket_received("TM-10016", source={"message_id": "<q@x.com>"}))
    await publish("agent_desk", "agent_replied", agent_replied("TM-10016", text="第一条", reply_id="r1"))
    await publish("agent_desk", "agent_replied", agent_replied("TM-10016", text="第二条", reply_id="r2"))
    await sink.start()  # only now: all three are queued before anything is sent
    mails = await wait_until(lambda: len(sink.messages()) == 3 and sink.messages(), message="three mails")
    # Deferred mail is retried with jitter: the three may arrive in any order.
    (ack,) = [m for m in mails if m.headers.get("Auto-Submitted")]
    (first,) = [m for m in mails if m.text.startswith("第一条")]
    (second,) = [m for m in mails if m.text.startswith("第二条")]
    assert first.headers["In-Reply-To"] == ack.headers["Message-ID"]
    assert second.headers["In-Reply-To"] == first.headers["Message-ID"]
    assert second.headers["References"].split() == ["<q@x.com>", ack.headers["Message-ID"], first.headers["Message-ID"]]


async def test_sla_breach_notice_goes_to_the_supervisor(sink, notifier, publish):
    await sink.start()
    await publish("sla_watcher", "sla_breached", sla_breached("TM-10007"))
    notice = (await wait_until(lambda: sink.messages(), message="SLA notice"))[0]
    assert notice.envelope_to == ["wang.fang@agents.ticketmesh.test"]
    assert notice.subject == "[#TM-10007] SLA 已超时：首次响应（P2-standard-email）"
    assert notice.headers["Auto-Submitted"] == "auto-generated"
    assert "李娜（li.na）" in notice.text and "P2-standard-email" in notice.text


async def test_mail_waits_for_the_smtp_server_and_goes_out_once_it_is_up(sink, notifier, publish, redis_client):
    body = ticket_received("TM-10008")
    await publish("intake_email", "ticket_received", body)  # the sink is not running yet
    deferred = await wait_until(lambda: outbox_record(redis_client, body, messages.KIND_TICKET_ACK).get("last_error"),
                                message="a failed attempt recorded")
    assert deferred.startswith("connect:")
    await sink.start()
    mails = await wait_until(lambda: sink.messages(), timeout=15, message="mail after the sink came up")
    assert [m.subject for m in mails] == ["[#TM-10008] 我们已收到您的请求：发票抬头错误"]
    record = await wait_until(lambda: (r := outbox_record(redis_client, body, messages.KIND_TICKET_ACK))
                              .get("announced") == "1" and r, message="recorded as sent and announced")
    assert record["state"] == "sent" and int(record["attempts"]) >= 2 and "raw" not in record
