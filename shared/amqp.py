"""asyncio side of the message contract: publish to and consume from ``<service>.events``.

Publishing waits for the broker's confirm (a message is only "sent" once RabbitMQ has it on
disk for a durable queue). Consuming acks after the handler returns (at-least-once), sends
invalid or poison messages to the dead-letter queue with the reason, and returns messages that
hit a transient failure to their queue after a pause. Connections are robust: aio-pika
reconnects with a fixed interval and re-declares exchanges, queues and consumers.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

import aio_pika
import aiormq
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from shared import events as ev
from shared import metrics
from shared.errors import is_transient
from shared.logging import bound_event_context, get_logger
from shared.topology import (DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE, dead_letter_headers,
                             handler_queue_name)

log = get_logger(__name__)

RECONNECT_INTERVAL_SECONDS = 2.0
TRANSIENT_RETRY_PAUSE_SECONDS = 1.0
SHUTDOWN_DRAIN_SECONDS = 20.0

Handler = Callable[[ev.Envelope], Awaitable[None]]


async def connect(amqp_uri: str, *, name: str) -> AbstractRobustConnection:
    """Connect with retries until the broker answers (services may start before RabbitMQ)."""
    delay = 0.5
    while True:
        try:
            return await aio_pika.connect_robust(
                amqp_uri, reconnect_interval=RECONNECT_INTERVAL_SECONDS, client_properties={"connection_name": name}
            )
        except (ConnectionError, OSError, aio_pika.exceptions.AMQPConnectionError) as exc:
            log.warning("amqp_connect_failed", error=str(exc), retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


async def declare_events_exchange(channel: aio_pika.abc.AbstractChannel, service: str) -> aio_pika.abc.AbstractExchange:
    # Arguments must match nameko's declaration exactly, or RabbitMQ refuses the redeclare.
    return await channel.declare_exchange(ev.exchange_name(service), aio_pika.ExchangeType.TOPIC, durable=True)


async def declare_dead_letters(channel: aio_pika.abc.AbstractChannel,
                               arguments: dict | None = None) -> aio_pika.abc.AbstractExchange:
    exchange = await channel.declare_exchange(DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True)
    queue = await channel.declare_queue(DEAD_LETTER_QUEUE, durable=True, arguments=arguments or None)
    await queue.bind(exchange)
    return exchange


class EventPublisher:
    """Publishes one service's events, persistent and confirmed."""

    def __init__(self, connection: AbstractRobustConnection, service: str):
        self._connection = connection
        self.service = service
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._channel_dead = False

    async def start(self) -> None:
        self._channel = await self._connection.channel(publisher_confirms=True)
        self._exchange = await declare_events_exchange(self._channel, self.service)
        self._channel_dead = False

    async def _replace_channel(self) -> None:
        # aio-pika restores a channel the broker closed (e.g. after a refused publish) once; if
        # that restore fails the channel stays dead and every later publish would fail too.
        if self._channel is not None:
            try:
                await self._channel.close()
            except Exception:  # noqa: BLE001 - it is already unusable
                pass
        await self.start()

    async def publish(self, event_type: str, body: dict) -> None:
        """Return once the broker confirmed; raise if it refused or the link is down."""
        assert self._exchange is not None, "start() first"
        if self._channel_dead:
            await self._replace_channel()
        message = aio_pika.Message(
            json.dumps(body, ensure_ascii=False).encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=body.get("event_id"),
            headers={"trace_id": body.get("trace_id", "")},
        )
        try:
            await self._exchange.publish(message, routing_key=event_type, mandatory=False)
        except aiormq.exceptions.ChannelInvalidStateError:
            self._channel_dead = True
            raise
        metrics.event_out(event_type)

    async def emit(self, event_type: str, /, *, now: datetime, trace_id: str, **fields: Any) -> dict:
        """Validate, publish and return the body (``make_event`` + ``publish``)."""
        body = ev.make_event(self.service, event_type, now=now, trace_id=trace_id, **fields)
        await self.publish(event_type, body)
        return body


@dataclass
class _Subscription:
    source: str
    event_type: str
    handler_name: str
    handler: Handler
    broadcast: bool
    queue_name: str = ""
    queue: Any = None
    consumer_tag: str | None = None


@dataclass
class EventConsumer:
    """Consumes events for one service with validation, dead letters and graceful drain.

    ``broadcast=True`` gives every replica its own exclusive queue (used to reach a WebSocket
    held by whichever replica the browser is connected to); otherwise replicas share one
    durable queue per handler, nameko's SERVICE_POOL.
    """

    connection: AbstractRobustConnection
    service: str
    replica_id: str
    prefetch: int = 32
    # TM_QUEUE_TYPE's x-arguments (CommonSettings.queue_arguments): shared queues, dead-letter queue.
    queue_arguments: dict = field(default_factory=dict)
    dead_letter_arguments: dict = field(default_factory=dict)
    _subs: list[_Subscription] = field(default_factory=list)
    _inflight: set[asyncio.Task] = field(default_factory=set)
    _channel: Any = None
    _dead_letters: Any = None
    _stopping: bool = False

    @property
    def running(self) -> bool:
        """Started, not stopping, and its channel open (readiness)."""
        return self._channel is not None and not self._channel.is_closed and not self._stopping

    def subscribe(self, source: str, event_type: str, handler_name: str, handler: Handler, *, broadcast: bool = False) -> None:
        ev.schema_for(source, event_type)  # fail at start-up on a typo, not at the first message
        self._subs.append(_Subscription(source, event_type, handler_name, handler, broadcast))

    async def start(self) -> None:
        self._channel = await self.connection.channel()
        await self._channel.set_qos(prefetch_count=self.prefetch)
        self._dead_letters = await declare_dead_letters(self._channel, self.dead_letter_arguments)
        for sub in self._subs:
            exchange = await declare_events_exchange(self._channel, sub.source)
            base = handler_queue_name(sub.source, sub.event_type, self.service, sub.handler_name)
            if sub.broadcast:
                sub.queue_name = f"{base}--{self.replica_id}"
                sub.queue = await self._channel.declare_queue(sub.queue_name, exclusive=True, auto_delete=True)
            else:
                sub.queue_name = base
                sub.queue = await self._channel.declare_queue(sub.queue_name, durable=True,
                                                              arguments=self.queue_arguments or None)
            await sub.queue.bind(exchange, routing_key=sub.event_type)
            sub.consumer_tag = await sub.queue.consume(self._make_callback(sub))
        log.info("consumers_started", queues=[s.queue_name for s in self._subs])

    def _make_callback(self, sub: _Subscription) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        async def on_message(message: AbstractIncomingMessage) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._inflight.add(task)
            try:
                await self._process(sub, message)
            finally:
                if task is not None:
                    self._inflight.discard(task)

        return on_message

    async def _process(self, sub: _Subscription, message: AbstractIncomingMessage) -> None:
        try:
            body = json.loads(message.body)
            event = ev.parse_event(sub.source, sub.event_type, body)
        except (ValueError, ev.InvalidEvent) as exc:
            reason = exc.reason if isinstance(exc, ev.InvalidEvent) else f"body is not JSON: {exc}"
            log.warning("event_rejected", queue=sub.queue_name, reason=reason)
            metrics.event_in(sub.source, sub.event_type, None, 0.0)
            metrics.event_failed(sub.source, sub.event_type, "rejected")
            await self._dead_letter(sub, message, reason)
            return
        metrics.event_in(sub.source, sub.event_type, event.occurred_at, time.time())
        started = time.perf_counter()
        with bound_event_context(trace_id=event.trace_id, ticket_id=event.ticket_id, event_id=event.event_id):
            try:
                await sub.handler(event)
            except Exception as exc:  # noqa: BLE001 - every failure is sorted below
                metrics.handler_done(sub.event_type, time.perf_counter() - started)
                metrics.event_failed(sub.source, sub.event_type, "retried" if is_transient(exc) else "dead_lettered")
                if is_transient(exc) and not self._stopping:
                    log.warning("event_retry_later", queue=sub.queue_name, error=repr(exc))
                    await asyncio.sleep(TRANSIENT_RETRY_PAUSE_SECONDS)
                    await message.nack(requeue=True)
                    return
                if is_transient(exc):
                    await message.nack(requeue=True)
                    return
                log.exception("event_handler_failed", queue=sub.queue_name)
                await self._dead_letter(sub, message, f"handler failed: {exc!r}")
                return
            metrics.handler_done(sub.event_type, time.perf_counter() - started)
            await message.ack()

    async def _dead_letter(self, sub: _Subscription, message: AbstractIncomingMessage, reason: str) -> None:
        headers = dict(message.headers or {})
        headers.update(dead_letter_headers(
            reason=reason, exchange=ev.exchange_name(sub.source), routing_key=sub.event_type,  # a replay arrives by queue name
            queue=sub.queue_name, service=self.service, now=datetime.now(timezone.utc),
        ))
        await self._dead_letters.publish(
            aio_pika.Message(message.body, headers=headers, content_type=message.content_type,
                             delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key="",
        )
        await message.ack()

    async def stop(self, drain_seconds: float = SHUTDOWN_DRAIN_SECONDS) -> None:
        """Stop taking messages, let in-flight handlers finish; unacked ones return to the queue."""
        self._stopping = True
        for sub in self._subs:
            if sub.consumer_tag and sub.queue is not None:
                try:
                    await sub.queue.cancel(sub.consumer_tag)
                except Exception:  # noqa: BLE001 - the channel may already be gone
                    pass
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=drain_seconds)
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
        log.info("consumers_stopped")
