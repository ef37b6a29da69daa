"""nameko side of the message contract: validated event handlers, dead letters, stores, runner.

``@event_consumer(source, event_type)`` is nameko's ``@event_handler`` (same exchange, same
queue name ``evt-<source>-<type>--<service>.<method>``) with three additions:

- the body is validated against its schema *before* a worker is spawned; an invalid body goes
  to the dead-letter queue with the reason and is acked, so the queue keeps moving;
- the handler receives the validated model, with ``trace_id``/``ticket_id`` bound to the log
  context for every line the worker writes;
- a worker that fails with a transient error (Redis or RabbitMQ briefly away) returns the
  message to the queue after a pause; any other failure dead-letters it with the exception.
"""
from __future__ import annotations

import signal
import time
from datetime import datetime, timezone
from functools import partial
from typing import Any, Callable

import eventlet
import kombu
import redis
from nameko.events import EventDispatcher, EventHandler
from nameko.extensions import DependencyProvider, SharedExtension
from nameko.runners import ServiceRunner

from shared import events as ev
from shared import metrics
from shared.config import CommonSettings
from shared.errors import is_transient
from shared.logging import bound_event_context, configure_logging, get_logger
from shared.redis_store import sync_client
from shared.topology import DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE, dead_letter_headers

log = get_logger(__name__)

TRANSIENT_RETRY_PAUSE_SECONDS = 1.0
REDIS_URL_KEY = "TM_REDIS_URL"
# TM_QUEUE_TYPE's x-arguments (CommonSettings.queue_arguments) for shared handler queues and the
# dead-letter queue; absent or empty means classic queues declared as before.
QUEUE_ARGUMENTS_KEY = "TM_QUEUE_ARGUMENTS"
DEAD_LETTER_QUEUE_ARGUMENTS_KEY = "TM_DEAD_LETTER_QUEUE_ARGUMENTS"


class DeadLetterSender(SharedExtension):
    """One confirmed kombu producer per container for the dead-letter exchange."""

    def setup(self) -> None:
        self._exchange = kombu.Exchange(DEAD_LETTER_EXCHANGE, type="fanout", durable=True)
        self._queue = kombu.Queue(DEAD_LETTER_QUEUE, exchange=self._exchange, routing_key="", durable=True,
                                  queue_arguments=self.container.config.get(DEAD_LETTER_QUEUE_ARGUMENTS_KEY) or None)
        self._connection = kombu.Connection(self.container.config["AMQP_URI"], transport_options={"confirm_publish": True})

    def start(self) -> None:
        # Declared up front, not at the first send: with quorum queues RabbitMQ dead-letters on
        # its own (delivery limit), and a fanout exchange with no queue bound would drop those.
        with kombu.Connection(self._connection.as_uri(include_password=True)) as conn:
            self._queue(conn.default_channel).declare()

    def send(self, message: Any, *, reason: str, exchange: str, routing_key: str, queue: str) -> None:
        headers = dict(message.headers or {})
        headers.update(dead_letter_headers(reason=reason, exchange=exchange, routing_key=routing_key, queue=queue,
                                           service=self.container.service_name, now=datetime.now(timezone.utc)))
        with kombu.Connection(self._connection.as_uri(include_password=True),
                              transport_options={"confirm_publish": True}) as conn:
            producer = conn.Producer()
            producer.publish(
                message.body, exchange=self._exchange, routing_key="", headers=headers,
                content_type=message.content_type, content_encoding=message.content_encoding,
                delivery_mode=2, declare=[self._queue], retry=True,
                retry_policy={"max_retries": 10, "interval_start": 0.5, "interval_step": 1, "interval_max": 5},
            )

    def stop(self) -> None:
        self._connection.release()


class ValidatedEventHandler(EventHandler):
    dead_letters = DeadLetterSender()

    def setup(self) -> None:
        super().setup()
        # nameko builds the queue inside setup(); it is declared later, at start, so the
        # arguments set here are the ones RabbitMQ sees. Exclusive/auto-delete queues stay classic.
        arguments = self.container.config.get(QUEUE_ARGUMENTS_KEY)
        if arguments and self.queue.durable and not (self.queue.exclusive or self.queue.auto_delete):
            self.queue.queue_arguments = dict(arguments)

    def handle_message(self, body: Any, message: Any) -> None:
        try:
            event = ev.parse_event(self.source_service, self.event_type, body)
        except ev.InvalidEvent as exc:
            log.warning("event_rejected", queue=self.queue.name, reason=exc.reason)
            metrics.event_in(self.source_service, self.event_type, None, 0.0)
            metrics.event_failed(self.source_service, self.event_type, "rejected")
            self._dead_letter(message, exc.reason)
            return
        metrics.event_in(self.source_service, self.event_type, event.occurred_at, time.time())
        context_data = self.unpack_message_headers(message)
        handle_result = partial(self._timed_result, message, time.perf_counter())
        try:
            self.container.spawn_worker(self, (event,), {}, context_data=context_data, handle_result=handle_result)
        except Exception:  # ContainerBeingKilled: give the message back
            self.queue_consumer.requeue_message(message)

    def _timed_result(self, message: Any, started: float, worker_ctx: Any, result: Any = None,
                      exc_info: Any = None) -> tuple:
        metrics.handler_done(self.event_type, time.perf_counter() - started)
        if exc_info is not None:
            outcome = "retried" if is_transient(exc_info[1]) else "dead_lettered"
            metrics.event_failed(self.source_service, self.event_type, outcome)
        return self.handle_result(message, worker_ctx, result, exc_info)

    def handle_message_processed(self, message: Any, result: Any = None, exc_info: Any = None) -> None:
        if exc_info is None:
            self.queue_consumer.ack_message(message)
            return
        exc = exc_info[1]
        if is_transient(exc):
            log.warning("event_retry_later", queue=self.queue.name, error=repr(exc))
            eventlet.sleep(TRANSIENT_RETRY_PAUSE_SECONDS)
            self.queue_consumer.requeue_message(message)
            return
        self._dead_letter(message, f"handler failed: {exc!r}")

    def _dead_letter(self, message: Any, reason: str) -> None:
        try:
            self.dead_letters.send(message, reason=reason, exchange=ev.exchange_name(self.source_service),
                                   routing_key=self.event_type, queue=self.queue.name)
        except Exception:  # noqa: BLE001 - never lose it: back to the queue rather than ack
            log.exception("dead_letter_failed", queue=self.queue.name)
            eventlet.sleep(TRANSIENT_RETRY_PAUSE_SECONDS)
            self.queue_consumer.requeue_message(message)
            return
        self.queue_consumer.ack_message(message)


event_consumer = ValidatedEventHandler.decorator


class LogContext(DependencyProvider):
    """Binds service, entrypoint, trace_id and ticket_id for every line a worker writes."""

    def worker_setup(self, worker_ctx: Any) -> None:
        event = worker_ctx.args[0] if worker_ctx.args else None
        fields: dict[str, Any] = {"entrypoint": worker_ctx.entrypoint.method_name, "call_id": worker_ctx.call_id}
        if isinstance(event, ev.Envelope):
            fields.update(trace_id=event.trace_id, ticket_id=event.ticket_id, event_id=event.event_id)
        ctx = bound_event_context(**fields)
        ctx.__enter__()
        worker_ctx.data["_tm_log_ctx"] = ctx

    def worker_teardown(self, worker_ctx: Any) -> None:
        ctx = worker_ctx.data.pop("_tm_log_ctx", None)
        if ctx is not None:
            ctx.__exit__(None, None, None)


class StoreProvider(DependencyProvider):
    """Injects ``store_cls(redis_client)``; one client (with its pool) per container."""

    def __init__(self, store_cls: Callable[[redis.Redis], Any], **kwargs: Any):
        self.store_cls = store_cls
        super().__init__(**kwargs)

    def setup(self) -> None:
        self.client = sync_client(self.container.config[REDIS_URL_KEY])
        self.store = self.store_cls(self.client)

    def stop(self) -> None:
        self.client.close()

    def get_dependency(self, worker_ctx: Any) -> Any:
        return self.store


class Emitter(EventDispatcher):
    """``EventDispatcher`` that validates: ``self.emit(event_type, now=..., trace_id=..., **fields)``."""

    def get_dependency(self, worker_ctx: Any) -> Callable[..., dict]:
        dispatch = super().get_dependency(worker_ctx)
        service = self.container.service_name

        def emit(event_type: str, /, *, now: datetime, trace_id: str, **fields: Any) -> dict:
            body = ev.make_event(service, event_type, now=now, trace_id=trace_id, **fields)
            dispatch(event_type, body)
            metrics.event_out(event_type)
            return body

        return emit


def nameko_config(settings: CommonSettings, **extra: Any) -> dict:
    return {
        "AMQP_URI": settings.amqp_uri,
        REDIS_URL_KEY: settings.redis_url,
        "serializer": "json",
        # nameko's consumer prefetch *is* its worker pool size, so TM_PREFETCH sets that.
        "max_workers": settings.prefetch,
        QUEUE_ARGUMENTS_KEY: settings.queue_arguments(),
        DEAD_LETTER_QUEUE_ARGUMENTS_KEY: settings.queue_arguments(dead_letters=False),
        "TM_REPLICA_ID": settings.replica_id,  # the replica label of metrics and the heartbeat
        **extra,
    }


def run_service(service_cls: type, settings: CommonSettings, **extra_config: Any) -> None:
    """Run one nameko service until SIGTERM/SIGINT, then stop gracefully.

    Graceful: consumers stop taking messages, running workers finish and ack; messages not yet
    started stay unacked and RabbitMQ gives them to another replica.
    """
    configure_logging(service_cls.name, level=settings.log_level, fmt=settings.log_format, replica=settings.replica_id)
    runner = ServiceRunner(nameko_config(settings, **extra_config))
    runner.add_service(service_cls)
    stopping = eventlet.event.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if not stopping.ready():
            stopping.send(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    runner.start()
    log.info("service_started", amqp=settings.amqp_uri.split("@")[-1])
    signum = stopping.wait()
    log.info("service_stopping", signal=signum)
    runner.stop()
    log.info("service_stopped")
