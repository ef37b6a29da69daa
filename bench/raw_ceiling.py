"""The raw ceiling: what RabbitMQ and aio-pika alone do on this machine.

Publishes N persistent messages the size of a real ``ticket_received`` body, each with a
publisher confirm (a bounded window of confirms in flight, as the intakes publish concurrently
from many requests), to a durable queue that one consumer drains with manual acks. Latency is
publish start → consumer receipt, per message. Run beside the mesh figures, never alone.
"""
from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timezone

import aio_pika

from bench.stats import Measurement, summarize
from shared import events as ev


def sample_ticket_body() -> bytes:
    now = datetime.now(timezone.utc)
    body = ev.make_event(
        "intake_chat", "ticket_received", now=now, trace_id=ev.new_id(), ticket_id="TM-99999", channel="chat",
        customer={"name": "访客 Visitor", "chat_visitor_id": "v-" + "0" * 30, "language": "zh"},
        subject="我的订单还没有收到，能帮我查一下吗？", text="我的订单还没有收到，能帮我查一下吗？ Order 12345, thanks.",
        received_at=now, source={"visitor_id": "v-" + "0" * 30, "client_message_id": ev.new_id()},
    )
    return json.dumps(body, ensure_ascii=False).encode()


async def measure_raw(amqp_uri: str, count: int, concurrency: int) -> Measurement:
    payload = sample_ticket_body()
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    done = asyncio.Event()

    conn = await aio_pika.connect_robust(amqp_uri)
    async with conn:
        consume_channel = await conn.channel()
        await consume_channel.set_qos(prefetch_count=256)
        queue = await consume_channel.declare_queue("bench.raw", durable=True)
        await queue.purge()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            latencies.append(time.perf_counter() - sent_at[int(message.message_id)])
            await message.ack()
            if len(latencies) >= count:
                done.set()

        tag = await queue.consume(on_message)
        publish_channel = await conn.channel(publisher_confirms=True)
        exchange = publish_channel.default_exchange
        window = asyncio.Semaphore(concurrency)

        async def publish(i: int) -> None:
            async with window:
                sent_at[i] = time.perf_counter()
                await exchange.publish(
                    aio_pika.Message(payload, message_id=str(i), content_type="application/json",
                                     delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key="bench.raw",
                )

        started = time.perf_counter()
        await asyncio.gather(*(publish(i) for i in range(count)))
        await asyncio.wait_for(done.wait(), timeout=120)
        elapsed = time.perf_counter() - started
        await queue.cancel(tag)
        await queue.delete(if_unused=False, if_empty=False)
    return summarize("raw aio-pika publish→consume (persistent, confirmed)", count, elapsed, latencies,
                     payload_bytes=len(payload))
