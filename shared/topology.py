"""AMQP names shared by both runtimes (no client library imported here).

Queues follow nameko's naming so a handler's queue is the same whichever runtime runs it:
``evt-<source>-<event_type>--<service>.<handler>``. Handler names are therefore wire contract:
renaming one creates a new queue and leaves the old one filling.

Dead letters: every consumer that cannot process a message republishes it, unchanged, to the
durable fanout exchange ``ticketmesh.dead_letters`` (bound to the durable queue of the same name)
with headers that say where it came from and why, then acks the original. ``ticketmesh
dead-letters`` lists and replays them.

Queue type (``TM_QUEUE_TYPE``): ``classic`` (dev, tests) declares queues with no arguments, as
always; ``quorum`` (production) declares every durable queue as a replicated quorum queue, and a
service queue also gets broker-side dead-lettering to the same exchange for what the consumer
never settles: a message delivered ``TM_QUEUE_DELIVERY_LIMIT`` times without an ack (a handler
that crashes its process, or keeps hitting a "transient" error) is moved there by RabbitMQ.
A queue's type is fixed when it is first declared: switching an existing vhost needs the
migration in docs/operations.md.
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

QUEUE_TYPES = ("classic", "quorum")
DEFAULT_DELIVERY_LIMIT = 20


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


def queue_arguments(queue_type: str, *, delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
                    dead_letters: bool = True) -> dict[str, object]:
    """``x-`` arguments for a durable queue; ``dead_letters=False`` for the dead-letter queue itself.

    Classic gives ``{}`` so existing classic queues redeclare unchanged.
    """
    if queue_type not in QUEUE_TYPES:
        raise ValueError(f"queue type {queue_type!r}: expected one of {', '.join(QUEUE_TYPES)}")
    if queue_type == "classic":
        return {}
    arguments: dict[str, object] = {"x-queue-type": "quorum"}
    if dead_letters:
        arguments.update({
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
            # at-least-once: the broker keeps a message until the dead-letter queue confirmed it,
            # which RabbitMQ only allows together with reject-publish overflow.
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
            "x-delivery-limit": delivery_limit,
        })
    return arguments
