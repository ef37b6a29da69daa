"""TM_QUEUE_TYPE=quorum on the asyncio runtime, against the real RabbitMQ: the consumer declares
quorum queues with broker dead-lettering, a message no handler ever settles (a poison message
that keeps failing "transiently") is dead-lettered by RabbitMQ after the delivery limit, and the
dead-letter tools list and replay it."""
import asyncio
from datetime import datetime, timezone

from shared import amqp as tm_amqp
from shared import events as ev
from shared.config import CommonSettings
from shared.dead_letter_ops import replay_dead_letters
from shared.errors import TransientError
from shared.topology import DEAD_LETTER_QUEUE, handler_queue_name
from tests.deploy.queue_checks import queue_info, wait_for_dead_letters

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=timezone.utc)
QUEUE = handler_queue_name("agent_desk", "agent_presence_changed", "dispatcher", "handle_agent_presence_changed")


def presence_body(agent_id):
    return ev.make_event("agent_desk", "agent_presence_changed", now=NOW, trace_id="t-q", agent_id=agent_id,
                         presence="online")


async def test_quorum_queue_dead_letters_a_message_nobody_settles(amqp_uri, monkeypatch):
    monkeypatch.setattr(tm_amqp, "TRANSIENT_RETRY_PAUSE_SECONDS", 0.0)
    settings = CommonSettings.from_env({"TM_QUEUE_TYPE": "quorum", "TM_QUEUE_DELIVERY_LIMIT": "2"})
    attempts = []

    async def handler(event):
        attempts.append(event.agent_id)
        raise TransientError("always away")  # requeued every time: only the broker can stop it

    conn = await tm_amqp.connect(amqp_uri, name="test")
    consumer = tm_amqp.EventConsumer(conn, "dispatcher", "r1", prefetch=4,
                                     queue_arguments=settings.queue_arguments(),
                                     dead_letter_arguments=settings.queue_arguments(dead_letters=False))
    consumer.subscribe("agent_desk", "agent_presence_changed", "handle_agent_presence_changed", handler)
    await consumer.start()
    publisher = tm_amqp.EventPublisher(conn, "agent_desk")
    await publisher.start()
    await publisher.publish("agent_presence_changed", presence_body("poison"))
    letters = await asyncio.to_thread(wait_for_dead_letters, amqp_uri, 1)
    await consumer.stop()
    await conn.close()

    info = queue_info(amqp_uri, QUEUE)
    assert info["type"] == "quorum"
    assert info["arguments"]["x-dead-letter-exchange"] == "ticketmesh.dead_letters"
    assert info["arguments"]["x-delivery-limit"] == 2
    dlq = queue_info(amqp_uri, DEAD_LETTER_QUEUE)
    assert dlq["type"] == "quorum" and "x-dead-letter-exchange" not in dlq["arguments"]

    [letter] = letters
    assert letter.reason.startswith("rabbitmq: delivery_limit")
    assert (letter.queue, letter.routing_key, letter.exchange) == (QUEUE, "agent_presence_changed", "agent_desk.events")
    assert attempts == ["poison"] * 3       # first delivery + the 2 redeliveries the limit allows

    [replayed] = await asyncio.to_thread(lambda: list(replay_dead_letters(amqp_uri)))
    assert replayed.queue == QUEUE
    assert await _ready_messages(amqp_uri, QUEUE) == 1      # back where it failed, once
    assert await asyncio.to_thread(wait_for_dead_letters, amqp_uri, 1, 0.0) == []


async def _ready_messages(amqp_uri, queue_name):
    conn = await tm_amqp.connect(amqp_uri, name="test-count")
    try:
        channel = await conn.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        return queue.declaration_result.message_count
    finally:
        await conn.close()


async def test_classic_default_declares_queues_without_arguments(amqp_uri):
    settings = CommonSettings.from_env({})
    conn = await tm_amqp.connect(amqp_uri, name="test")
    consumer = tm_amqp.EventConsumer(conn, "dispatcher", "r1", queue_arguments=settings.queue_arguments(),
                                     dead_letter_arguments=settings.queue_arguments(dead_letters=False))

    async def handler(event):
        return None

    consumer.subscribe("agent_desk", "agent_presence_changed", "handle_agent_presence_changed", handler)
    await consumer.start()
    await consumer.stop()
    await conn.close()
    info = queue_info(amqp_uri, QUEUE)
    assert info["type"] == "classic" and info["arguments"] == {}
