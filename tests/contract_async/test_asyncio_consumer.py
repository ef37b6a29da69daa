"""The asyncio half of the contract: shared.amqp's consumer validates, dead-letters, retries
transient failures and drains in-flight work on stop."""
import asyncio
import json
from datetime import datetime, timezone

import aio_pika

from shared import events as ev
from shared.amqp import EventConsumer, EventPublisher, connect
from shared.errors import TransientError
from shared.testing.asyncio_helpers import wait_until
from shared.testing.plugin import dead_letters

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=timezone.utc)


def presence_body(agent_id="li.na", presence="online"):
    return ev.make_event("agent_desk", "agent_presence_changed", now=NOW, trace_id="t-1",
                         agent_id=agent_id, presence=presence)


async def start_consumer(amqp_uri, handler):
    conn = await connect(amqp_uri, name="test")
    consumer = EventConsumer(conn, "dispatcher", "r1", prefetch=4)
    consumer.subscribe("agent_desk", "agent_presence_changed", "handle_agent_presence_changed", handler)
    await consumer.start()
    publisher = EventPublisher(conn, "agent_desk")
    await publisher.start()
    return conn, consumer, publisher


async def test_invalid_and_non_json_bodies_are_dead_lettered_and_valid_ones_still_flow(amqp_uri):
    seen = []
    done = asyncio.Event()

    async def handler(event):
        seen.append(event.agent_id)
        done.set()

    conn, consumer, publisher = await start_consumer(amqp_uri, handler)
    bad = presence_body()
    bad["presence"] = "sleeping"
    await publisher.publish("agent_presence_changed", bad)
    channel = await conn.channel()
    exchange = await channel.get_exchange("agent_desk.events")
    await exchange.publish(aio_pika.Message(b"{not json"), routing_key="agent_presence_changed")
    await publisher.publish("agent_presence_changed", presence_body("chen.wei"))
    await asyncio.wait_for(done.wait(), 10)
    await consumer.stop()
    await conn.close()
    assert seen == ["chen.wei"]
    letters = await asyncio.to_thread(dead_letters, amqp_uri, 10.0, 2)
    reasons = sorted(h["x-tm-dead-reason"] for h, _ in letters)
    assert "presence: Input should be 'online', 'away' or 'offline'" in reasons[1]
    assert reasons[0].startswith("body is not JSON")
    assert all(h["x-tm-failed-service"] == "dispatcher" for h, _ in letters)


async def test_transient_failure_is_retried_and_a_crash_is_dead_lettered(amqp_uri):
    attempts = {"li.na": 0, "boom": 0}
    finished = asyncio.Event()

    async def handler(event):
        attempts[event.agent_id] += 1
        if event.agent_id == "boom":
            raise ValueError("cannot handle")
        if attempts["li.na"] == 1:
            raise TransientError("redis away")
        finished.set()

    conn, consumer, publisher = await start_consumer(amqp_uri, handler)
    await publisher.publish("agent_presence_changed", presence_body("boom"))
    await publisher.publish("agent_presence_changed", presence_body("li.na"))
    await asyncio.wait_for(finished.wait(), 10)
    await consumer.stop()
    await conn.close()
    assert attempts == {"li.na": 2, "boom": 1}
    [(headers, body)] = await asyncio.wait_for(asyncio.to_thread(dead_letters, amqp_uri), 15)
    assert "cannot handle" in headers["x-tm-dead-reason"]
    assert json.loads(body)["agent_id"] == "boom"


async def test_stop_lets_the_running_handler_finish_and_ack(amqp_uri):
    started, release, finished = asyncio.Event(), asyncio.Event(), []

    async def handler(event):
        started.set()
        await release.wait()
        finished.append(event.event_id)

    conn, consumer, publisher = await start_consumer(amqp_uri, handler)
    body = presence_body()
    await publisher.publish("agent_presence_changed", body)
    await asyncio.wait_for(started.wait(), 10)
    stopping = asyncio.create_task(consumer.stop())
    asyncio.get_running_loop().call_later(0.2, release.set)
    await asyncio.wait_for(stopping, 10)
    assert finished == [body["event_id"]]
    channel = await conn.channel()
    queue = await channel.declare_queue("evt-agent_desk-agent_presence_changed--dispatcher.handle_agent_presence_changed",
                                        durable=True, passive=True)
    assert queue.declaration_result.message_count == 0  # acked, not redelivered
    await conn.close()


async def test_batched_acks_never_cover_a_message_still_being_handled(amqp_uri):
    """Acks go out in batches (``multiple``): one covering a later tag must not take the
    message still in its handler with it, and the ones handled behind it are acked anyway."""
    release, seen = asyncio.Event(), []

    async def handler(event):
        if event.agent_id == "slow":
            await release.wait()
        seen.append(event.agent_id)

    conn, consumer, publisher = await start_consumer(amqp_uri, handler)
    for agent in ("a", "slow", "b", "c", "d"):
        await publisher.publish("agent_presence_changed", presence_body(agent))
    await wait_until(lambda: sorted(seen) == ["a", "b", "c", "d"], message="the fast ones handled")
    await wait_until(lambda: consumer._acks.waiting == 0, message="their acks sent")  # noqa: SLF001
    await conn.close()  # a crash: the broker takes back what was not acked
    release.set()

    conn = await connect(amqp_uri, name="check")
    channel = await conn.channel()
    queue = await channel.declare_queue(
        "evt-agent_desk-agent_presence_changed--dispatcher.handle_agent_presence_changed", durable=True, passive=True)
    left = await wait_until(lambda: queue.get(fail=False), message="the unacked message back in its queue")
    assert json.loads(left.body)["agent_id"] == "slow"
    await left.ack()
    assert await queue.get(fail=False) is None  # the others stayed acked
    await conn.close()
