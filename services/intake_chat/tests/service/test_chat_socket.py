"""The chat WebSocket: hello/welcome, acks after confirm, dedupe, errors, agent replies."""
import asyncio
from datetime import datetime, timezone

import aiohttp
from aiohttp import WSMsgType

from shared import events as ev
from shared.testing.asyncio_helpers import wait_until
from shared.testing.plugin import AsyncEventListener

from services.intake_chat.identity import session_visitor_id
from services.intake_chat.tests.conftest import VISITOR, VISITOR_ID

RECEIVE_TIMEOUT = 10


async def receive(ws, frame_type):
    """Next frame of ``frame_type`` (others are skipped), or fail after the timeout."""
    async def next_matching():
        while True:
            frame = await ws.receive_json()
            if frame["type"] == frame_type:
                return frame
    return await asyncio.wait_for(next_matching(), RECEIVE_TIMEOUT)


async def open_chat(chat_app, visitor_id=VISITOR, **hello):
    ws = await chat_app.http.ws_connect("/ws")
    await ws.send_json({"type": "hello", "visitor_id": visitor_id, "name": "Ann", "language": "en", **hello})
    return ws, await receive(ws, "welcome")


async def test_hello_message_ack_and_resend_is_deduplicated(chat_app, amqp_uri):
    async with AsyncEventListener(amqp_uri, "intake_chat") as bus:
        ws, welcome = await open_chat(chat_app)
        assert welcome == {"type": "welcome", "visitor_id": VISITOR_ID, "verified": False, "ticket_id": None,
                           "resumed": False, "history": [], "agents_online": 0, "email_known": False}
        await ws.send_json({"type": "message", "client_message_id": "m-1", "text": "Where is my parcel?"})
        ack = await receive(ws, "ack")
        assert ack == {"type": "ack", "client_message_id": "m-1", "ticket_id": "TM-10001", "message_id": "m-1",
                       "seq": 1}
        # the ack came after the confirm: the event is already routed
        _, opened = await bus.wait_for(lambda t, b: t == "ticket_received")
        assert opened["customer"]["name"] == "Ann"
        await ws.send_json({"type": "message", "client_message_id": "m-1", "text": "Where is my parcel?"})
        assert await receive(ws, "ack") == ack
        await ws.send_json({"type": "message", "client_message_id": "m-2", "text": "Hello?"})
        await receive(ws, "ack")
        await bus.wait_for(lambda t, b: t == "message_received")
        assert [t for t, _ in bus.events] == ["ticket_received", "message_received"]
        await ws.close()


async def test_bad_frames_get_error_frames_and_the_socket_stays_open(chat_app, redis_client):
    ws = await chat_app.http.ws_connect("/ws")
    await ws.send_json({"type": "message", "client_message_id": "m-1", "text": "too early"})
    assert (await receive(ws, "error"))["code"] == "hello_required"
    await ws.send_str("{oops")
    assert (await receive(ws, "error"))["code"] == "invalid_json"
    await ws.send_json({"type": "dance"})
    assert (await receive(ws, "error"))["code"] == "unknown_type"
    await ws.send_json({"type": "hello", "visitor_id": "bad id"})
    assert (await receive(ws, "error"))["code"] == "invalid_session"
    assert [k for k in redis_client.scan_iter("tm:*") if not k.startswith(("tm:intake_chat:rate:", "tm:mesh:"))] == []
    await ws.send_json({"type": "hello", "visitor_id": VISITOR})
    await receive(ws, "welcome")
    await ws.send_json({"type": "message", "client_message_id": "m-1", "text": "x" * 5001})
    error = await receive(ws, "error")
    assert error["code"] == "text_too_long" and error["client_message_id"] == "m-1"
    await ws.send_json({"type": "message", "client_message_id": "m-2", "text": "fine"})
    assert (await receive(ws, "ack"))["ticket_id"] == "TM-10001"
    await ws.close()


async def test_oversized_frame_closes_the_socket(chat_app):
    ws, _ = await open_chat(chat_app)
    await ws.send_str('{"type":"message","text":"' + "x" * 70_000 + '"}')
    msg = await asyncio.wait_for(ws.receive(), RECEIVE_TIMEOUT)
    assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
    assert ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG


async def test_foreign_origin_cannot_open_the_socket(chat_app):
    async with chat_app.http.get("/ws", headers={"Origin": "https://evil.example", "Connection": "Upgrade",
                                                 "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                                                 "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}) as resp:
        assert resp.status == 403


async def test_agent_reply_reaches_the_socket_and_the_history(chat_app):
    ws, _ = await open_chat(chat_app)
    other_visitor, _ = await open_chat(chat_app, visitor_id="v_someone0123456789else")
    await ws.send_json({"type": "message", "client_message_id": "m-1", "text": "我要退款"})
    ticket_id = (await receive(ws, "ack"))["ticket_id"]
    await chat_app.publish_agent_reply(ticket_id, "您好，我是李娜，马上为您处理。", reply_id="r-1")
    frame = await receive(ws, "agent_message")
    assert frame["reply_id"] == "r-1" and frame["text"] == "您好，我是李娜，马上为您处理。"
    assert frame["agent_name"] == "李娜" and frame["sent_at"]
    # the same reply delivered again (redelivery) is kept once in the transcript
    await chat_app.publish_agent_reply(ticket_id, "您好，我是李娜，马上为您处理。", reply_id="r-1")
    await chat_app.publish_agent_reply(ticket_id, "已退款。", reply_id="r-2")
    assert (await receive(ws, "agent_message"))["reply_id"] == "r-1"
    assert (await receive(ws, "agent_message"))["reply_id"] == "r-2"
    # reconnecting shows the conversation so far, in order, once the pooled consumer has it
    async def welcome_with_history():
        again, welcome = await open_chat(chat_app)
        await again.close()
        return welcome if len(welcome["history"]) >= 3 else None
    welcome = await wait_until(welcome_with_history, RECEIVE_TIMEOUT, "three transcript entries")
    assert welcome["ticket_id"] == ticket_id
    assert [(e["from"], e.get("reply_id") or e.get("client_message_id")) for e in welcome["history"]] == [
        ("customer", "m-1"), ("agent", "r-1"), ("agent", "r-2")]
    # the other visitor's socket got nothing: its next frame is the answer to a probe sent now
    await other_visitor.send_json({"type": "probe"})
    assert (await asyncio.wait_for(other_visitor.receive_json(), RECEIVE_TIMEOUT))["code"] == "unknown_type"
    await ws.close()
    await other_visitor.close()


async def test_resolved_ticket_closes_the_conversation_and_the_next_message_opens_a_new_ticket(chat_app, amqp_uri):
    ws, _ = await open_chat(chat_app)
    await ws.send_json({"type": "message", "client_message_id": "m-1", "text": "first problem"})
    first = (await receive(ws, "ack"))["ticket_id"]
    resolved = ev.make_event(ev.AGENT_DESK, ev.TICKET_RESOLVED, now=datetime.now(timezone.utc), trace_id="t",
                             ticket_id=first, agent_id="li.na", channel="chat")
    await chat_app.publish(ev.AGENT_DESK, ev.TICKET_RESOLVED, resolved)

    async def conversation_closed():
        again, welcome = await open_chat(chat_app)
        await again.close()
        return welcome["ticket_id"] is None
    await wait_until(conversation_closed, RECEIVE_TIMEOUT, "conversation closed")
    await ws.send_json({"type": "message", "client_message_id": "m-2", "text": "another problem"})
    ack = await receive(ws, "ack")
    assert ack["ticket_id"] != first
    await ws.close()


async def test_relay_takes_the_visitor_from_the_event_and_asks_the_store_only_without_it(chat_app):
    # The ticket's own visitor (kept in the store) and a second visitor the event names: the
    # event decides, so no replica reads Redis per reply; an event without it falls back.
    ws, _ = await open_chat(chat_app)
    await ws.send_json({"type": "message", "client_message_id": "m-1", "text": "我要退款"})
    ticket_id = (await receive(ws, "ack"))["ticket_id"]
    named, _ = await open_chat(chat_app, visitor_id="v_named0123456789visitor")
    await chat_app.publish_agent_reply(ticket_id, "给事件里的访客", reply_id="r-1",
                                       visitor_id=session_visitor_id("v_named0123456789visitor"))
    assert (await receive(named, "agent_message"))["reply_id"] == "r-1"
    await chat_app.publish_agent_reply(ticket_id, "事件里没有访客", reply_id="r-2", visitor_id=None)
    assert (await receive(ws, "agent_message"))["reply_id"] == "r-2"  # r-1 never reached the store's visitor
    await ws.close()
    await named.close()
