"""No ack without the broker's confirm; the resend after an outage is published once, same ids."""
import asyncio

import aio_pika

from shared.intake_ledger import stable_event_id
from shared.testing.asyncio_helpers import wait_until
from shared.testing.plugin import AsyncEventListener

from services.intake_chat.tests.conftest import VISITOR


async def refuse_publishes(amqp_uri):
    """Swap the exchange for an internal one: the broker refuses publishes to it (and the
    publisher's attempts to declare it back), until the test removes it."""
    async with await aio_pika.connect(amqp_uri) as admin:
        channel = await admin.channel()
        await channel.exchange_delete("intake_chat.events")
        await channel.declare_exchange("intake_chat.events", aio_pika.ExchangeType.TOPIC, durable=True, internal=True)


async def accept_publishes(amqp_uri):
    async with await aio_pika.connect(amqp_uri) as admin:
        channel = await admin.channel()
        await channel.exchange_delete("intake_chat.events")


async def next_frame(ws):
    """The next frame that answers the client (queue updates come on their own schedule)."""
    while True:
        frame = await asyncio.wait_for(ws.receive_json(), 10)
        if frame["type"] != "queue":
            return frame


async def test_unconfirmed_message_is_not_acked_and_its_resend_is_one_event(chat_app, amqp_uri):
    await refuse_publishes(amqp_uri)
    status, body = await chat_app.post({"visitor_id": VISITOR, "client_message_id": "m-1", "text": "hello?"})
    assert status == 503 and body["error"]["code"] == "service_unavailable"

    ws = await chat_app.http.ws_connect("/ws")
    await ws.send_json({"type": "hello", "visitor_id": VISITOR})
    assert (await next_frame(ws))["history"] == []  # nothing confirmed, nothing shown
    await ws.send_json({"type": "message", "client_message_id": "m-1", "text": "hello?"})
    error = await next_frame(ws)
    assert error == {"type": "error", "code": "unavailable", "client_message_id": "m-1",
                     "message": "temporarily unavailable, the message will be sent again"}

    await accept_publishes(amqp_uri)
    async with AsyncEventListener(amqp_uri, "intake_chat") as bus:  # declares the real exchange again
        async def acked():
            await ws.send_json({"type": "message", "client_message_id": "m-1", "text": "hello?"})
            frame = await next_frame(ws)
            return frame if frame["type"] == "ack" else None
        ack = await wait_until(acked, 10, "the resend acknowledged")
        assert ack["ticket_id"] == "TM-10001" and ack["message_id"] == "m-1"
        await ws.send_json({"type": "message", "client_message_id": "m-2", "text": "sentinel"})
        await bus.wait_for(lambda t, b: t == "message_received")
        assert [(t, b["event_id"]) for t, b in bus.events] == [
            ("ticket_received", stable_event_id("ticket_received", "TM-10001")),
            ("message_received", stable_event_id("message_received", "TM-10001", "m-2"))]
    await ws.close()
