"""asyncio side of the message contract: publish to and consume from ``<service>.events``.

Publishing waits for the broker's confirm (a message is only "sent" once RabbitMQ has it on
disk for a durable queue). Consuming acks after the handler returns (at-least-once), sends
invalid or poison messages to the dead-letter queue with the reason, and returns messages that
hit a transient failure to their queue after a pause. Acks of handled messages are batched
(:class:`_AckBatcher`): one ``multiple`` ack per window instead of one frame per message.
Connections are robust: aio-pika reconnects with a fixed interval and re-declares exchanges,
queues and consumers.
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
# How long a handled message may wait for its ack to be batched with others. On loopback every
# frame costs a send and the broker's receive; a crash within the window only redelivers
# messages already handled, which at-least-once handlers take anyway.
ACK_WINDOW_SECONDS = 0.05
ACK_SEND_TIMEOUT_SECONDS = 5.0

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


_PENDING = -1  # a tag's state while its handler runs; once handled, the flush generation it ended in


class _AckBatcher:
    """Acks handled messages in batches, never one whose handler has not succeeded.

    Every delivery is registered in delivery-tag order when its handler starts (one map per
    AMQP channel: tags are per channel and restart on a reconnected one). A flush, at most
    ``window`` seconds after a handler finished (at once when ``batch`` are waiting), acks the
    handled prefix (every tag up to the first still running) with one ``multiple`` ack. Tags
    handled behind a slower message are acked one by one at the next flush, so a slow handler
    holds no prefetch slots but its own. Messages the consumer settles itself (nack, dead
    letter) leave the map once that frame went out, so a later ``multiple`` ack cannot reach
    one still being settled, and never reaches one whose handler failed. One task sends every
    ack, in order.
    """

    def __init__(self, window: float, batch: int):
        self._window = window
        self._batch = max(1, batch)
        self._channels: dict[Any, dict[int, int]] = {}
        self._handled = 0
        self._generation = 0
        self._any = asyncio.Event()
        self._full = asyncio.Event()
        self._task: asyncio.Task | None = None
        # One flush at a time: the broker refuses (closes the channel on) an ack for a tag a
        # later ``multiple`` ack already covered, so frames must go out in computed order.
        self._lock = asyncio.Lock()

    @property
    def waiting(self) -> int:
        """Handled messages whose ack has not been sent yet."""
        return sum(1 for tags in self._channels.values() for state in tags.values() if state != _PENDING)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="amqp-ack-batcher")

    def received(self, channel: Any, tag: int) -> None:
        tags = self._channels.get(channel)
        if tags is None:
            tags = self._channels[channel] = {}
        tags[tag] = _PENDING

    def handled(self, channel: Any, tag: int) -> None:
        tags = self._channels.get(channel)
        if tags is None or tag not in tags:
            return  # its channel closed meanwhile: the broker redelivers it
        tags[tag] = self._generation
        self._handled += 1
        self._any.set()
        if self._handled >= self._batch:
            self._full.set()

    def settled(self, channel: Any, tag: int) -> None:
        tags = self._channels.get(channel)
        if tags is not None:
            tags.pop(tag, None)

    async def _run(self) -> None:
        while True:
            await self._any.wait()
            if not self._full.is_set():
                try:
                    async with asyncio.timeout(self._window):
                        await self._full.wait()
                except TimeoutError:
                    pass
            self._any.clear()
            self._full.clear()
            await self.flush()
            if self._handled:  # some wait behind a slower message: look again next window
                self._any.set()

    async def flush(self, *, final: bool = False) -> None:
        """Send the acks due; ``final``: also those behind a message still running."""
        async with self._lock:
            await self._flush(final)

    async def _flush(self, final: bool) -> None:
        self._generation += 1
        for channel, tags in list(self._channels.items()):
            if channel.is_closed:
                del self._channels[channel]  # unacked messages went back to their queues
                continue
            upto, alone, blocked = None, [], False
            for tag, state in tags.items():  # insertion order: delivery order
                if state == _PENDING:
                    blocked = True
                elif not blocked:
                    upto = tag
                elif final or state < self._generation - 1:
                    alone.append(tag)  # handled behind a slower one, and waited a window already
            if upto is None and not alone:
                continue
            if upto is not None:
                for tag in [t for t in tags if t <= upto]:
                    del tags[tag]
            for tag in alone:
                del tags[tag]
            try:
                # Bounded: a frame stuck in a dead connection's write queue must not hold up the
                # acks of the channel that replaced it.
                async with asyncio.timeout(ACK_SEND_TIMEOUT_SECONDS):
                    if upto is not None:
                        await channel.basic_ack(upto, multiple=True)
                    for tag in alone:
                        await channel.basic_ack(tag)
            except Exception as exc:  # noqa: BLE001 - channel gone: the broker redelivers them
                log.warning("event_ack_failed", error=repr(exc))
        self._handled = self.waiting

    async def close(self) -> None:
        """Stop the timer and ack everything handled so far."""
        if self._task is not None:
            async with self._lock:  # not in the middle of a flush
                self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self.flush(final=True)


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
    ack_window: float = ACK_WINDOW_SECONDS
    _acks: _AckBatcher | None = None

    @property
    def running(self) -> bool:
        """Started, not stopping, and its channel open (readiness)."""
        return self._channel is not None and not self._channel.is_closed and not self._stopping

    def subscribe(self, source: str, event_type: str, handler_name: str, handler: Handler, *, broadcast: bool = False) -> None:
        ev.schema_for(source, event_type)  # fail at start-up on a typo, not at the first message
        self._subs.append(_Subscription(source, event_type, handler_name, handler, broadcast))

    async def start(self) -> None:
        # Half the prefetch: a full batch is acked at once, so waiting acks never starve a consumer.
        self._acks = _AckBatcher(self.ack_window, self.prefetch // 2)
        self._acks.start()
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
            acks = self._acks
            assert acks is not None
            try:
                channel = message.channel
            except aiormq.exceptions.ChannelInvalidStateError:
                return  # closed under us: the broker gives it to the next consumer
            tag = message.delivery_tag
            acks.received(channel, tag)  # before any await: tags register in delivery order
            task = asyncio.current_task()
            if task is not None:
                self._inflight.add(task)
            handled = False
            try:
                handled = await self._process(sub, message)
            except Exception:  # noqa: BLE001 - settling failed: back to the queue, never acked unhandled
                log.exception("event_settle_failed", queue=sub.queue_name)
                try:
                    await message.nack(requeue=True)
                except Exception:  # noqa: BLE001 - channel gone: the broker requeues it itself
                    return  # stays registered as running: no batched ack can cover it
                acks.settled(channel, tag)
            else:
                if handled:
                    acks.handled(channel, tag)
                else:
                    acks.settled(channel, tag)
            finally:
                if task is not None:
                    self._inflight.discard(task)

        return on_message

    async def _process(self, sub: _Subscription, message: AbstractIncomingMessage) -> bool:
        """True once the handler succeeded (the ack is left to the batcher); False when the
        message was settled here (dead-lettered or returned to its queue)."""
        try:
            event = ev.parse_event_json(sub.source, sub.event_type, message.body)
        except ev.InvalidEvent as exc:
            log.warning("event_rejected", queue=sub.queue_name, reason=exc.reason)
            metrics.event_in(sub.source, sub.event_type, None, 0.0)
            metrics.event_failed(sub.source, sub.event_type, "rejected")
            await self._dead_letter(sub, message, exc.reason)
            return False
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
                    return False
                if is_transient(exc):
                    await message.nack(requeue=True)
                    return False
                log.exception("event_handler_failed", queue=sub.queue_name)
                await self._dead_letter(sub, message, f"handler failed: {exc!r}")
                return False
            metrics.handler_done(sub.event_type, time.perf_counter() - started)
            return True

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
        if self._acks is not None:
            await self._acks.close()  # what finished is acked; the rest returns to its queue
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
        log.info("consumers_stopped")
