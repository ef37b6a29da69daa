"""AMQP names shared by both runtimes (no client library imported here).

Queues follow nameko's naming so a handler's queue is the same whichever runtime runs it:
``evt-<source>-<event_type>--<service>.<handler>``. Handler names are therefore wire contract:
renaming one creates a new queue and leaves the old one filling.

Dead letters: every consumer that cannot process a message republishes it, unchanged, to the
durable fanout exchange ``ticketmesh.dead_letters`` (bound to the durable queue of the same name)
with headers that say where it came from and why, then acks the original. ``ticketmesh
dead-letters`` lists and replays them.
"""
from __future__ import annotations

from datetime import datetime, timezone

DEAD_LETTER_EXCHANGE = "ticketmesh.dead_letters"
DEAD_LETTER_QUEUE = "ticketmesh.dead_letters"

H_REASON = "x-tm-dead-reason"
H_EXCHANGE = "x-tm-original-exchange"
H_ROUTING_KEY = "x-tm-original-routing-key"
H_QUEUE = "x-tm-failed-queue"
H_SERVICE = "x-tm-failed-service"
H_FAILED_AT = "x-tm-failed-at"


def handler_queue_name(source: str, event_type: str, service: str, handler: str) -> str:
    return f"evt-{source}-{event_type}--{service}.{handler}"


def dead_letter_headers(*, reason: str, exchange: str, routing_key: str, queue: str, service: str,
                        now: datetime) -> dict[str, str]:
    return {
        H_REASON: reason[:1000],
        H_EXCHANGE: exchange,
        H_ROUTING_KEY: routing_key,
        H_QUEUE: queue,
        H_SERVICE: service,
        H_FAILED_AT: now.astimezone(timezone.utc).isoformat(),
    }
