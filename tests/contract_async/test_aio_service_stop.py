"""AioService.stop under a steady stream of events: the consumer stops before the app's cleanup
tears down what handlers use (the notifier's delivery loop and robot poster live there), so no
handler runs half-torn-down, and every event is handled or still queued, never acked unhandled."""
import asyncio
import json
from datetime import datetime, timezone

import aio_pika

from shared import events as ev
from shared.aio_service import AioService
from shared.config import CommonSettings
from shared.topology import handler_queue_name

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=timezone.utc)
CLEANUP_SECONDS = 0.5   # a background loop draining, e.g. the notifier's SMTP senders


def presence(i: int) -> dict:
    return ev.make_event(ev.AGENT_DESK, ev.AGENT_PRESENCE_CHANGED, now=NOW, trace_id=f"t-{i}",
                         agent_id=f"agent{i}", presence="online")


async def test_stop_drains_the_consumer_before_the_app_cleanup(amqp_uri, redis_url):
    resource = {"open": True}
    handled: list[tuple[str, bool]] = []
    first = asyncio.Event()

    async def on_presence(event: ev.AgentPresenceChanged) -> None:
        handled.append((event.agent_id, resource["open"]))
        first.set()
        await asyncio.sleep(0.01)

    def build_app(ctx):
        app = ctx.new_app()
        ctx.consumer.subscribe(ev.AGENT_DESK, ev.AGENT_PRESENCE_CHANGED, "on_presence", on_presence)

        async def poster(_app):
            yield
            resource["open"] = False          # closed first, then its drain takes a while
            await asyncio.sleep(CLEANUP_SECONDS)

        app.cleanup_ctx.append(poster)
        return app

    common = CommonSettings.from_env({"TM_AMQP_URI": amqp_uri, "TM_REDIS_URL": redis_url})
    service = AioService("dispatcher", common, build_app, port=0)
    await service.start()
    conn = await aio_pika.connect(amqp_uri)
    channel = await conn.channel(publisher_confirms=True)
    exchange = await channel.declare_exchange(ev.exchange_name(ev.AGENT_DESK), aio_pika.ExchangeType.TOPIC,
                                              durable=True)
    sent: list[str] = []

    async def stream() -> None:
        i = 0
        while True:
            body = presence(i)
            await exchange.publish(aio_pika.Message(json.dumps(body).encode()), routing_key=ev.AGENT_PRESENCE_CHANGED)
            sent.append(body["agent_id"])
            i += 1
            await asyncio.sleep(0.005)   # a steady stream, not a synchronisation

    streaming = asyncio.create_task(stream())
    try:
        await asyncio.wait_for(first.wait(), 10)
        await service.stop()
    finally:
        streaming.cancel()
        await asyncio.gather(streaming, return_exceptions=True)
    queue = await channel.get_queue(handler_queue_name(ev.AGENT_DESK, ev.AGENT_PRESENCE_CHANGED, "dispatcher",
                                                       "on_presence"))
    left = queue.declaration_result.message_count   # the events not handled stayed queued
    await conn.close()

    after_close = [agent for agent, was_open in handled if not was_open]
    assert not after_close, f"{len(after_close)} events handled after the app's cleanup began"
    assert len(handled) + left >= len(sent), (len(handled), left, len(sent))
