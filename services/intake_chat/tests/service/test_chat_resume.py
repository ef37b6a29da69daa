"""Resume after a reconnect, gap repair, confirmations, missed-reply mails, transcripts, typing."""
from datetime import datetime, timezone

import pytest

from shared import events as ev
from shared.testing.asyncio_helpers import wait_until
from shared.testing.plugin import AsyncEventListener

from services.intake_chat.tests.conftest import VISITOR_ID
from services.intake_chat.tests.service.test_chat_socket import RECEIVE_TIMEOUT, open_chat, receive

STATE = "tm:intake_chat:state:"


@pytest.fixture
def chat_settings_env():
    return {"TM_CHAT_REPLY_EMAIL_DELAY_SECONDS": "0.3"}


async def ticket_with_reply(chat_app, ws, text="我要退款", reply="您好，马上处理。", reply_id="r-1"):
    await ws.send_json({"type": "message", "client_message_id": "m-1", "text": text})
    ack = await receive(ws, "ack")
    await chat_app.publish_agent_reply(ack["ticket_id"], reply, reply_id=reply_id)
    return ack["ticket_id"], await receive(ws, "agent_message")


async def test_hello_with_since_is_sent_only_what_follows_and_sync_fills_a_gap(chat_app, redis_client):
    ws, _ = await open_chat(chat_app, email="ann@example.com")
    ticket, first_reply = await ticket_with_reply(chat_app, ws)
    assert first_reply["seq"] == 2
    await ws.close()
    # While away: two more replies, recorded by the pooled consumer.
    await chat_app.publish_agent_reply(ticket, "第二条", reply_id="r-2")
    await chat_app.publish_agent_reply(ticket, "第三条", reply_id="r-3")
    await wait_until(lambda: redis_client.llen(f"tm:intake_chat:transcript:{ticket}") == 4, RECEIVE_TIMEOUT, "recorded")

    again, welcome = await open_chat(chat_app, ticket_id=ticket, since=2)
    assert welcome["resumed"] and [(e["seq"], e["reply_id"]) for e in welcome["history"]] == [(3, "r-2"), (4, "r-3")]
    assert redis_client.hget(STATE + ticket, "delivered") == "2"  # since = what the widget holds
    await again.send_json({"type": "received", "seq": 4})
    await again.send_json({"type": "sync", "since": 1})  # a widget that skipped position 2
    synced = await receive(again, "history")
    assert [e["seq"] for e in synced["entries"]] == [2, 3, 4]
    assert all("agent_id" not in e for e in synced["entries"])
    assert redis_client.hget(STATE + ticket, "delivered") == "4"
    # a widget of another ticket (or a fresh page) gets the whole conversation
    fresh, welcome = await open_chat(chat_app, ticket_id="TM-99999", since=3)
    assert not welcome["resumed"] and [e["seq"] for e in welcome["history"]] == [1, 2, 3, 4]
    for sock in (again, fresh):
        await sock.close()


async def test_a_reply_no_widget_received_is_mailed_once_with_everything_missed(chat_app, amqp_uri, redis_client):
    async with AsyncEventListener(amqp_uri, "intake_chat", ["chat_reply_missed"]) as mails:
        ws, _ = await open_chat(chat_app, email="ann@example.com")
        ticket, reply = await ticket_with_reply(chat_app, ws)
        await ws.send_json({"type": "received", "seq": reply["seq"]})  # this one reached the widget
        await wait_until(lambda: redis_client.hget(STATE + ticket, "delivered") == "2", RECEIVE_TIMEOUT, "confirmed")
        await ws.close()
        await chat_app.publish_agent_reply(ticket, "您还在吗？", reply_id="r-2")
        await chat_app.publish_agent_reply(ticket, "已为您退款。", reply_id="r-3")
        _, missed = await mails.wait_for(lambda t, b: True)
        assert missed["ticket_id"] == ticket and missed["to"] == "ann@example.com"
        assert missed["subject"] == "我要退款" and missed["customer"]["chat_visitor_id"] == VISITOR_ID
        # one look covers every reply appended before it (they come within the delay)
        replies = [r["text"] for r in missed["replies"]]
        if replies == ["您还在吗？"]:  # the second reply landed after the first look: it has its own
            _, later = await mails.wait_for(lambda t, b: b["up_to_seq"] == 4)
            replies += [r["text"] for r in later["replies"]]
        assert replies == ["您还在吗？", "已为您退款。"]
        await wait_until(lambda: redis_client.hget(STATE + ticket, "emailed") == "4", RECEIVE_TIMEOUT, "emailed")
        await wait_until(lambda: redis_client.zcard("tm:intake_chat:missed") == 0, RECEIVE_TIMEOUT, "no look left")
        assert len(mails.events) == len({b["event_id"] for _, b in mails.events})


async def test_a_received_reply_and_a_customer_without_address_are_not_mailed(chat_app, amqp_uri, redis_client):
    async with AsyncEventListener(amqp_uri, "intake_chat", ["chat_reply_missed"]) as mails:
        ws, _ = await open_chat(chat_app, email="ann@example.com")
        ticket, reply = await ticket_with_reply(chat_app, ws)
        await ws.send_json({"type": "received", "seq": reply["seq"]})
        nobody, _ = await open_chat(chat_app, visitor_id="v_no0address0visitor0")  # no email given
        await nobody.send_json({"type": "message", "client_message_id": "m-1", "text": "hi"})
        other_ticket = (await receive(nobody, "ack"))["ticket_id"]
        await nobody.close()
        await chat_app.publish_agent_reply(other_ticket, "hello?", reply_id="r-9", visitor_id=None)
        await wait_until(lambda: redis_client.zcard("tm:intake_chat:missed") == 0, RECEIVE_TIMEOUT, "both looked at")
        assert mails.events == []
        assert redis_client.hget(STATE + ticket, "emailed") is None
        await ws.close()


async def test_transcript_is_refused_before_an_agent_answered_then_published(chat_app, amqp_uri):
    async with AsyncEventListener(amqp_uri, "intake_chat", ["chat_transcript_requested"]) as bus:
        ws, _ = await open_chat(chat_app)
        await ws.send_json({"type": "message", "client_message_id": "m-1", "text": "发票抬头写错了"})
        ticket = (await receive(ws, "ack"))["ticket_id"]
        await ws.send_json({"type": "transcript", "email": "wang.fang@example.com"})
        assert (await receive(ws, "error"))["code"] == "transcript_unavailable"
        await chat_app.publish_agent_reply(ticket, "已为您重开发票。", reply_id="r-1")
        await receive(ws, "agent_message")
        await ws.send_json({"type": "transcript"})
        assert (await receive(ws, "error"))["code"] == "email_required"
        await ws.send_json({"type": "transcript", "email": "not an address"})
        assert (await receive(ws, "error"))["code"] == "invalid_email"
        await ws.send_json({"type": "transcript", "email": "wang.fang@example.com"})
        assert (await receive(ws, "transcript_queued"))["to"] == "wang.fang@example.com"
        _, body = await bus.wait_for(lambda t, b: True)
        assert body["ticket_id"] == ticket and body["to"] == "wang.fang@example.com"
        assert [(e["author"], e["text"]) for e in body["entries"]] == [
            ("customer", "发票抬头写错了"), ("agent", "已为您重开发票。")]
        await ws.close()


async def test_customer_typing_is_announced_once_per_window_and_agent_typing_reaches_the_widget(chat_app, amqp_uri):
    async with AsyncEventListener(amqp_uri, "intake_chat", ["chat_typing"]) as bus:
        ws, _ = await open_chat(chat_app)
        await ws.send_json({"type": "typing"})  # no ticket yet: nobody to tell
        await ws.send_json({"type": "message", "client_message_id": "m-1", "text": "hi"})
        ticket = (await receive(ws, "ack"))["ticket_id"]
        for _ in range(3):
            await ws.send_json({"type": "typing", "typing": True})
        await bus.wait_for(lambda t, b: b["ticket_id"] == ticket)
        await ws.send_json({"type": "sync", "since": 0})  # answered after the typing frames were handled
        await receive(ws, "history")
        assert len(bus.events) == 1
    typing = ev.make_event(ev.AGENT_DESK, ev.AGENT_TYPING, now=datetime.now(timezone.utc), trace_id="t",
                           ticket_id=ticket, agent_id="li.na")
    await chat_app.publish(ev.AGENT_DESK, ev.AGENT_TYPING, typing)
    assert await receive(ws, "agent_typing") == {"type": "agent_typing", "typing": True, "agent_name": "李娜"}
    await ws.close()


async def test_resolution_tells_the_open_widget(chat_app):
    ws, _ = await open_chat(chat_app)
    ticket, _ = await ticket_with_reply(chat_app, ws)
    resolved = ev.make_event(ev.AGENT_DESK, ev.TICKET_RESOLVED, now=datetime.now(timezone.utc), trace_id="t",
                             ticket_id=ticket, agent_id="li.na", channel="chat")
    await chat_app.publish(ev.AGENT_DESK, ev.TICKET_RESOLVED, resolved)
    assert await receive(ws, "closed") == {"type": "closed", "ticket_id": ticket}
    await ws.close()


async def test_new_frames_reject_bad_fields_and_write_nothing(chat_app, redis_client):
    ws, _ = await open_chat(chat_app)
    for frame, code in [({"type": "sync", "since": "x"}, "invalid_since"), ({"type": "received", "seq": -1}, "invalid_since"),
                        ({"type": "message", "client_message_id": "m-1", "files": "f"}, "invalid_files"),
                        ({"type": "message", "client_message_id": "m-1", "files": ["f_nope"]}, "unknown_upload"),
                        ({"type": "transcript"}, "transcript_unavailable")]:
        await ws.send_json(frame)
        assert (await receive(ws, "error"))["code"] == code, frame
    # the hello's profile and the abuse counters, nothing of a conversation
    assert {k.split(":")[2] for k in redis_client.scan_iter("tm:intake_chat:*")} == {"visitor", "rate"}
    await ws.close()


async def test_an_address_left_after_the_form_is_where_a_missed_reply_goes(chat_app, amqp_uri):
    async with AsyncEventListener(amqp_uri, "intake_chat", ["chat_reply_missed"]) as mails:
        ws, welcome = await open_chat(chat_app)
        assert not welcome["email_known"]
        await ws.send_json({"type": "message", "client_message_id": "m-1", "text": "没人在吗"})
        ticket = (await receive(ws, "ack"))["ticket_id"]
        await ws.send_json({"type": "profile", "email": "bad"})
        assert (await receive(ws, "error"))["code"] == "invalid_email"
        await ws.send_json({"type": "profile", "email": "late@example.com"})
        assert (await receive(ws, "profile_saved"))["email_known"]
        await ws.close()
        await chat_app.publish_agent_reply(ticket, "抱歉久等了", reply_id="r-1")
        _, missed = await mails.wait_for(lambda t, b: True)
        assert missed["to"] == "late@example.com" and [r["text"] for r in missed["replies"]] == ["抱歉久等了"]
