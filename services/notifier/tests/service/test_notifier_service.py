"""The notifier against a real SMTP sink, a real RabbitMQ vhost and real Redis.

Tests run with TM_PREFETCH=1, so one queue's messages are handled one after another: when a
later "sentinel" mail arrives, every event published before it on the same queue is done.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from devenv.smtp_sink import SmtpSink
from services.notifier import messages
from services.notifier.config import Settings
from services.notifier.service import NOTIFIER_KEY, create_service
from services.notifier.tests.factories import agent_replied, sla_breached, ticket_received
from shared.testing.asyncio_helpers import free_port, wait_until
from shared.testing.plugin import AsyncEventListener, dead_letters

ROSTER = Path(__file__).resolve().parents[4] / "deploy" / "demo" / "roster.yaml"


@pytest.fixture
def smtp_port() -> int:
    return free_port()


@pytest.fixture
async def sink(tmp_path, smtp_port):
    sink = SmtpSink(tmp_path / "outbox", smtp_port=smtp_port)
    yield sink
    await sink.stop()


@pytest.fixture
async def notifier(amqp_uri, redis_url, smtp_port):
    settings = Settings.from_env({
        "TM_AMQP_URI": amqp_uri, "TM_REDIS_URL": redis_url, "TM_PREFETCH": "1", "TM_NOTIFIER_PORT": "0",
        "TM_SMTP_PORT": str(smtp_port), "TM_SMTP_TIMEOUT": "3", "TM_ROSTER_FILE": str(ROSTER),
        "TM_SUPERVISOR_EMAIL": "wang.fang@agents.ticketmesh.test",
        "TM_NOTIFY_ACK_WAIT_SECONDS": "0",  # ack on ticket_received (test_customer_updates waits for classification)
    })
    service = create_service(settings)
    await service.start()
    yield service
    await service.stop()


@pytest.fixture
def publish(publish_event):
    return publish_event


def mails_to(sink: SmtpSink, address: str) -> list:
    return [m for m in sink.messages() if address in m.envelope_to]


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


async def test_sla_breach_notice_goes_to_the_supervisor(sink, notifier, publish):
    await sink.start()
    await publish("sla_watcher", "sla_breached", sla_breached("TM-10007"))
    notice = (await wait_until(lambda: sink.messages(), message="SLA notice"))[0]
    assert notice.envelope_to == ["wang.fang@agents.ticketmesh.test"]
    assert notice.subject == "[#TM-10007] SLA 已超时：首次响应（P2-standard-email）"
    assert notice.headers["Auto-Submitted"] == "auto-generated"
    assert "李娜（li.na）" in notice.text and "P2-standard-email" in notice.text


async def test_mail_waits_for_the_smtp_server_and_goes_out_once_it_is_up(sink, notifier, publish):
    service_notifier = notifier.app[NOTIFIER_KEY]
    real_mailer = service_notifier.mailer
    failures: list[Exception] = []
    first_failure = asyncio.Event()

    class RecordingMailer:
        async def send(self, message):
            try:
                await real_mailer.send(message)
            except Exception as exc:
                failures.append(exc)
                first_failure.set()
                raise

    service_notifier.mailer = RecordingMailer()
    await publish("intake_email", "ticket_received", ticket_received("TM-10008"))  # the sink is not running yet
    await asyncio.wait_for(first_failure.wait(), 10)
    assert type(failures[0]).__name__ == "TransientError"
    await sink.start()
    mails = await wait_until(lambda: sink.messages(), timeout=15, message="mail after the sink came up")
    assert [m.subject for m in mails] == ["[#TM-10008] 我们已收到您的请求：发票抬头错误"]


class _RefuseRecipients:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        return "550 5.1.1 mailbox unavailable"


async def test_permanent_smtp_refusal_dead_letters_the_event(notifier, publish, amqp_uri, smtp_port, redis_client):
    refusing = Controller(_RefuseRecipients(), hostname="127.0.0.1", port=smtp_port)
    await asyncio.to_thread(refusing.start)
    try:
        body = ticket_received("TM-10009")
        await publish("intake_email", "ticket_received", body)
        letters = await asyncio.to_thread(dead_letters, amqp_uri, 10.0, 1)
    finally:
        await asyncio.to_thread(refusing.stop)
    assert len(letters) == 1
    headers, raw = letters[0]
    assert "550" in headers["x-tm-dead-reason"] and b"TM-10009" in raw
    # The claim was released: a replay after the cause is fixed will send.
    nid = messages.notification_id(body["event_id"], messages.KIND_TICKET_ACK)
    assert redis_client.get(f"tm:notifier:notification:{nid}") is None
