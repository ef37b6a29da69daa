"""Chat mails through the real notifier: RabbitMQ vhost, Redis and an SMTP sink."""
from __future__ import annotations

from datetime import datetime, timezone

from shared import events as ev
from shared.testing.asyncio_helpers import wait_until

from services.notifier.tests.helpers import mails_to

NOW = datetime(2026, 3, 2, 8, 30, tzinfo=timezone.utc)


def line(author, text, name):
    return {"author": author, "name": name, "text": text, "sent_at": NOW.isoformat()}


def transcript_requested(to, ticket_id="TM-10001"):
    return ev.make_event(ev.INTAKE_CHAT, ev.CHAT_TRANSCRIPT_REQUESTED, now=NOW, trace_id="t-" + ticket_id,
                         ticket_id=ticket_id, customer={"name": "王芳", "language": "zh"}, to=to, subject="发票",
                         entries=[line("customer", "发票抬头写错了", "王芳"), line("agent", "已重开。", "李娜")])


def reply_missed(to, ticket_id="TM-10002"):
    return ev.make_event(ev.INTAKE_CHAT, ev.CHAT_REPLY_MISSED, now=NOW, trace_id="t-" + ticket_id,
                         ticket_id=ticket_id, customer={"name": "Ann", "language": "en"}, to=to, subject="Parcel",
                         replies=[line("agent", "It ships today.", "Li Na")], up_to_seq=2,
                         event_id=f"missed-{ticket_id}-2")


async def test_transcript_and_missed_replies_are_mailed_once_each(sink, notifier, publish):
    await sink.start()
    transcript = transcript_requested("wang.fang@example.com")
    await publish("intake_chat", "chat_transcript_requested", transcript)
    await publish("intake_chat", "chat_transcript_requested", transcript)  # redelivered: same event id
    missed = reply_missed("ann@example.com")
    await publish("intake_chat", "chat_reply_missed", missed)
    await publish("intake_chat", "chat_reply_missed", missed)
    mail = (await wait_until(lambda: mails_to(sink, "ann@example.com"), message="missed-reply mail"))[0]
    assert mail.subject == "[#TM-10002] We replied to your chat: Parcel"
    await publish("intake_chat", "chat_reply_missed", reply_missed("sentinel@example.com", "TM-10003"))
    await wait_until(lambda: mails_to(sink, "sentinel@example.com"), message="sentinel")
    transcripts = mails_to(sink, "wang.fang@example.com")
    assert len(transcripts) == 1 and len(mails_to(sink, "ann@example.com")) == 1
    assert transcripts[0].subject == "[#TM-10001] 您的在线咨询记录：发票"


async def test_no_transcript_to_a_system_address(sink, notifier, publish):
    await sink.start()
    await publish("intake_chat", "chat_transcript_requested", transcript_requested("noreply@example.com"))
    await publish("intake_chat", "chat_reply_missed", reply_missed("sentinel@example.com", "TM-10003"))
    await wait_until(lambda: mails_to(sink, "sentinel@example.com"), message="sentinel")
    assert mails_to(sink, "noreply@example.com") == []
