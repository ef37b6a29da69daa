"""List, show and replay dead letters (blocking; used by the ``ticketmesh`` CLI and tests).

Listing reads messages from the dead-letter queue and returns them to it (requeue) in one pass,
so looking changes nothing. Replay takes messages off the queue one at a time and republishes
each, body and headers unchanged but without the dead-letter headers, to the queue that failed
to process it (or, if that queue is gone, to the exchange and routing key it came from), with
publisher confirms; the dead letter is acked only after the broker confirmed the republish, so
a replay interrupted half-way loses nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import amqp.exceptions
import kombu

from shared.topology import (DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE, H_EXCHANGE, H_FAILED_AT, H_QUEUE,
                             H_REASON, H_ROUTING_KEY, H_SERVICE)

_DL_HEADERS = {H_REASON, H_EXCHANGE, H_ROUTING_KEY, H_QUEUE, H_SERVICE, H_FAILED_AT}
# What RabbitMQ itself adds when a quorum queue dead-letters (TM_QUEUE_TYPE=quorum, delivery limit).
_BROKER_DL_HEADERS = {"x-death", "x-first-death-reason", "x-first-death-queue", "x-first-death-exchange",
                      "x-last-death-reason", "x-last-death-queue", "x-last-death-exchange", "x-delivery-count"}


@dataclass(frozen=True)
class DeadLetter:
    position: int
    reason: str
    exchange: str
    routing_key: str
    queue: str
    service: str
    failed_at: str
    body: bytes
    headers: dict


def _declare(conn: kombu.Connection) -> kombu.Queue:
    exchange = kombu.Exchange(DEAD_LETTER_EXCHANGE, type="fanout", durable=True)
    queue = kombu.Queue(DEAD_LETTER_QUEUE, exchange=exchange, routing_key="", durable=True)
    # Use the queue as the services declared it: with TM_QUEUE_TYPE=quorum a plain redeclare
    # would be refused (inequivalent x-queue-type).
    if not _queue_exists(conn, DEAD_LETTER_QUEUE):
        queue(conn.default_channel).declare()
    return queue


def _to_dead_letter(position: int, message: kombu.Message) -> DeadLetter:
    headers = dict(message.headers or {})
    body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
    if H_REASON not in headers and headers.get("x-death"):
        return _broker_dead_letter(position, headers, body)
    return DeadLetter(position, str(headers.get(H_REASON, "")), str(headers.get(H_EXCHANGE, "")),
                      str(headers.get(H_ROUTING_KEY, "")), str(headers.get(H_QUEUE, "")),
                      str(headers.get(H_SERVICE, "")), str(headers.get(H_FAILED_AT, "")), body, headers)


def _broker_dead_letter(position: int, headers: dict, body: bytes) -> DeadLetter:
    """A letter RabbitMQ dead-lettered (quorum delivery limit): where from is in ``x-death``."""
    first = headers["x-death"][0]
    keys = first.get("routing-keys") or [""]
    reason = f"rabbitmq: {first.get('reason', '')} after {first.get('count', 1)} time(s)"
    failed_at = first.get("time")
    return DeadLetter(position, reason, str(first.get("exchange", "")), str(keys[0]), str(first.get("queue", "")),
                      "", failed_at.isoformat() if hasattr(failed_at, "isoformat") else str(failed_at or ""),
                      body, headers)


def list_dead_letters(amqp_uri: str, limit: int = 100) -> list[DeadLetter]:
    found: list[DeadLetter] = []
    with kombu.Connection(amqp_uri) as conn:
        queue = _declare(conn)
        bound = queue(conn.default_channel)
        held = []
        for position in range(1, limit + 1):
            message = bound.get(no_ack=False)
            if message is None:
                break
            held.append(message)
            found.append(_to_dead_letter(position, message))
        for message in held:
            message.requeue()
    return found


def _queue_exists(conn: kombu.Connection, name: str) -> bool:
    channel = conn.channel()  # a failed passive declare closes its channel: use a spare one
    try:
        channel.queue_declare(queue=name, passive=True)
        return True
    except amqp.exceptions.ChannelError:  # NotFound, or an exclusive queue of another connection
        return False
    finally:
        try:
            channel.close()
        except Exception:  # noqa: BLE001 - already closed by the broker
            pass


def replay_dead_letters(amqp_uri: str, limit: int | None = None) -> Iterator[DeadLetter]:
    """Republish up to ``limit`` dead letters (all if None); yields each one once it is replayed."""
    with kombu.Connection(amqp_uri, transport_options={"confirm_publish": True}) as conn:
        queue = _declare(conn)
        bound = queue(conn.default_channel)
        producer = conn.Producer(channel=conn.channel())
        replayed = 0
        while limit is None or replayed < limit:
            message = bound.get(no_ack=False)
            if message is None:
                return
            letter = _to_dead_letter(replayed + 1, message)
            if not letter.exchange:
                message.requeue()
                raise ValueError(f"dead letter {letter.position} has no original exchange; left in the queue")
            headers = {k: v for k, v in letter.headers.items() if k not in _DL_HEADERS | _BROKER_DL_HEADERS}
            # Back to the queue that failed (the default exchange routes by queue name), so the
            # other consumers of the event do not get it a second time; if that queue is gone
            # (a replica's broadcast queue), through the original exchange.
            if letter.queue and _queue_exists(conn, letter.queue):
                exchange, routing_key = "", letter.queue
            else:
                exchange, routing_key = letter.exchange, letter.routing_key
            producer.publish(letter.body, exchange=exchange, routing_key=routing_key,
                             headers=headers, content_type=message.content_type or "application/json",
                             content_encoding=message.content_encoding or "utf-8", delivery_mode=2)
            message.ack()
            replayed += 1
            yield letter
