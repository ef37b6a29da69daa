"""When RabbitMQ will not take the event, the PBX gets 503 and its retry is published once."""
import aio_pika

from shared.intake_ledger import stable_event_id
from shared.testing.asyncio_helpers import wait_until
from shared.testing.plugin import AsyncEventListener


async def retry_until_ok(send, timeout=10.0):
    """What the PBX does: repeat the same request until it is accepted."""
    async def accepted():
        status, body = await send()
        return (status, body) if status == 200 else None
    return await wait_until(accepted, timeout, "request accepted")


async def test_unconfirmed_publish_is_503_and_the_retry_publishes_the_same_ticket_once(phone_app, amqp_uri):
    hangup = {"event": "hangup", "callId": "call-503", "from": "13812345678", "direction": "in", "cause": "cancel"}
    async with await aio_pika.connect(amqp_uri) as admin:
        channel = await admin.channel()
        await channel.exchange_delete("intake_phone.events")  # the broker now refuses the publish
    status, body = await phone_app.cti(json=hangup)
    assert status == 503 and body["error"]["code"] == "service_unavailable"

    async with AsyncEventListener(amqp_uri, "intake_phone") as bus:  # declares the exchange again
        assert await retry_until_ok(lambda: phone_app.cti(json=hangup)) == (200, {})
        assert await phone_app.cti(json=hangup) == (200, {})  # accepted again, not republished
        _, event = await bus.wait_for(lambda t, b: True)
        assert event["ticket_id"] == "TM-10001"
        assert event["event_id"] == stable_event_id("ticket_received", "TM-10001")
        await phone_app.cti(json={**hangup, "callId": "sentinel"})
        await bus.wait_for(lambda t, b: b["source"]["call_id"] == "sentinel")
        assert [b["source"]["call_id"] for _, b in bus.events] == ["call-503", "sentinel"]
