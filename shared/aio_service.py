"""Scaffolding for the mesh's asyncio services: one aiohttp app, one event publisher, one event
consumer and one Redis client, started in order and stopped gracefully.

API::

    from aiohttp import web
    from shared.aio_service import (AioService, ApiError, BrokerUnavailable, ServiceContext,
                                    json_response, publish_confirmed, read_json, run_service)

    def build_app(ctx: ServiceContext) -> web.Application:
        # ctx.name, ctx.common (CommonSettings), ctx.redis (redis.asyncio, decode_responses),
        # ctx.publisher (EventPublisher for "<name>.events", started), ctx.consumer
        # (EventConsumer: subscribe here, it starts after the HTTP site listens),
        # ctx.websockets (a set: add the sockets you open, discard them when they end).
        app = ctx.new_app(client_max_size=64 * 1024)   # JSON-error middleware, GET /healthz, /readyz, /metrics
        ctx.metrics_hooks.append(refresh_gauges)       # async () -> None, awaited before /metrics renders
        app.router.add_post("/api/things", handler)
        ctx.consumer.subscribe("agent_desk", "agent_replied", "relay_reply", on_reply, broadcast=True)
        return app

    service = AioService("intake_chat", common, build_app, host="127.0.0.1", port=8081)
    await service.start()   # connect AMQP and Redis, build the app, start the publisher, listen, consume
    service.port            # the bound port (tests pass port=0)
    service.app             # the aiohttp app (handlers keep their state in it)
    await service.close_websockets(code=1012, message="restart")   # e.g. tests forcing a reconnect
    await service.stop()    # graceful: see below
    run_service(service)    # for __main__: configure logging, asyncio.run(start, wait SIGTERM/SIGINT, stop)

Handlers:
- ``raise ApiError(status, code, message)`` → ``{"error": {"code": ..., "message": ...}}``;
  aiohttp's own errors (404, 405, 413 ...) get the same shape; ``BrokerUnavailable`` and transient
  Redis/AMQP errors → 503 ``service_unavailable``; anything else → 500 ``internal_error`` with the
  exception logged (never the request body).
- ``await read_json(request)`` → the JSON object, or ApiError 400 ``invalid_json``.
- ``await publish_confirmed(publisher, event_type, body)`` waits for the broker's confirm at most
  ``PUBLISH_TIMEOUT_SECONDS`` and raises ``BrokerUnavailable`` when it does not come.

Health: ``/healthz`` says the process answers (always 200 while it does); ``/readyz`` is 200 only
when the AMQP connection is open, Redis answers PING and the consumer runs (503 with the
failing checks otherwise); ``/metrics`` is the Prometheus exposition (shared/metrics.py). Every
replica refreshes its heartbeat key (shared/heartbeat.py) while it runs.

Graceful stop (SIGTERM): stop the consumer (in-flight handlers finish, unacked messages return
to their queue); stop listening; close WebSockets with 1001 "going away" (browsers reconnect to
another replica); let in-flight requests finish (``HTTP_DRAIN_SECONDS``); run the app's cleanup
(background loops); close the AMQP connection (publisher included) and Redis.
"""
from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import Any, Awaitable, Callable

import aio_pika
import redis.asyncio
from aio_pika.abc import AbstractRobustConnection
from aiohttp import WSCloseCode, web

from shared import heartbeat, metrics
from shared.amqp import EventConsumer, EventPublisher, connect
from shared.config import CommonSettings
from shared.errors import is_transient
from shared.logging import configure_logging, get_logger
from shared.redis_store import async_client

log = get_logger(__name__)

PUBLISH_TIMEOUT_SECONDS = 5.0
HTTP_DRAIN_SECONDS = 10.0
HEALTH_CHECK_TIMEOUT_SECONDS = 2.0
DEFAULT_CLIENT_MAX_SIZE = 256 * 1024

_STATUS_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "request_too_large", 415: "unsupported_media_type", 422: "unprocessable",
    429: "too_many_requests", 503: "service_unavailable",
}


class ApiError(Exception):
    """A client-facing error: HTTP ``status`` and a snake_case ``code`` with a human ``message``;
    ``retry_after`` (seconds) becomes the ``Retry-After`` header clients and proxies honour."""

    def __init__(self, status: int, code: str, message: str, *, retry_after: int | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class BrokerUnavailable(Exception):
    """RabbitMQ did not confirm a publish in time (down, blocked or refusing)."""


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(data, ensure_ascii=False), status=status,
                        content_type="application/json", headers=headers)


def json_error(status: int, code: str, message: str, *, retry_after: int | None = None) -> web.Response:
    headers = {"Retry-After": str(max(1, retry_after))} if retry_after is not None else None
    return json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


async def read_json(request: web.Request) -> dict:
    """The request's JSON object; ApiError 400 for anything else (oversize → aiohttp's 413)."""
    raw = await request.read()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "the request body must be a JSON object")
    return data


def _route(request: web.Request) -> str:
    """The matched route pattern, not the path: paths can carry secrets (``/cti/{token}``)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


async def publish_confirmed(publisher: EventPublisher, event_type: str, body: dict,
                            timeout: float = PUBLISH_TIMEOUT_SECONDS) -> None:
    """Publish and wait for the confirm; BrokerUnavailable if it fails or takes too long.

    A robust connection that is reconnecting would otherwise keep the caller waiting
    indefinitely; an HTTP client is better served by a quick 503 it can retry.
    """
    try:
        await asyncio.wait_for(publisher.publish(event_type, body), timeout)
    except asyncio.TimeoutError:
        raise BrokerUnavailable(f"no confirm for {event_type} within {timeout}s") from None
    except aio_pika.exceptions.CONNECTION_EXCEPTIONS as exc:
        raise BrokerUnavailable(f"publish of {event_type} failed: {exc!r}") from exc


@web.middleware
async def json_errors_middleware(request: web.Request, handler: Callable) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return json_error(exc.status, exc.code, exc.message, retry_after=exc.retry_after)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_error(exc.status, _STATUS_CODES.get(exc.status, "http_error"), exc.reason)
    except BrokerUnavailable as exc:
        log.warning("broker_unavailable", route=_route(request), error=str(exc))
        return json_error(503, "service_unavailable", "the message broker is unavailable, retry later")
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - the client gets JSON, the log gets the traceback
        if is_transient(exc):
            log.warning("dependency_unavailable", route=_route(request), error=repr(exc))
            return json_error(503, "service_unavailable", "a backing service is unavailable, retry later")
        log.exception("request_failed", route=_route(request), method=request.method)
        return json_error(500, "internal_error", "internal error")


class ServiceContext:
    """What ``build_app`` receives: the connected clients and a factory for the app."""

    def __init__(self, name: str, common: CommonSettings, amqp: AbstractRobustConnection,
                 redis_client: redis.asyncio.Redis, publisher: EventPublisher, consumer: EventConsumer):
        self.name = name
        self.common = common
        self.amqp = amqp
        self.redis = redis_client
        self.publisher = publisher
        self.consumer = consumer
        self.websockets: set[web.WebSocketResponse] = set()
        # Scrape-time gauges (tickets by status ...): read from Redis just before /metrics renders.
        self.metrics_hooks: list[Callable[[], Awaitable[None]]] = []

    def new_app(self, *, client_max_size: int = DEFAULT_CLIENT_MAX_SIZE, middlewares: list | tuple = ()) -> web.Application:
        app = web.Application(client_max_size=client_max_size, middlewares=[json_errors_middleware, *middlewares])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _checks(self) -> dict[str, bool]:
        checks = {"amqp": not self.amqp.is_closed and not getattr(self.amqp, "reconnecting", False)}
        try:
            checks["redis"] = bool(await asyncio.wait_for(self.redis.ping(), HEALTH_CHECK_TIMEOUT_SECONDS))
        except Exception:  # noqa: BLE001 - any failure means "not healthy"
            checks["redis"] = False
        return checks

    async def _healthz(self, _request: web.Request) -> web.Response:
        checks = await self._checks()
        healthy = all(checks.values())
        body = {"status": "ok" if healthy else "unavailable", "service": self.name,
                "replica": self.common.replica_id, "checks": checks}
        return json_response(body, status=200 if healthy else 503)

    async def _readyz(self, _request: web.Request) -> web.Response:
        checks = {**await self._checks(), "consumers": self.consumer.running}
        ready = all(checks.values())
        body = {"ready": ready, "service": self.name, "replica": self.common.replica_id,
                "checks": {name: "ok" if ok else "failing" for name, ok in checks.items()}}
        return json_response(body, status=200 if ready else 503)

    async def _metrics(self, _request: web.Request) -> web.Response:
        for hook in self.metrics_hooks:
            try:
                await asyncio.wait_for(hook(), HEALTH_CHECK_TIMEOUT_SECONDS)
            except Exception as exc:  # noqa: BLE001 - counters still render; the gauges keep their last value
                log.warning("metrics_gauges_failed", error=repr(exc))
        payload, content_type = metrics.render()
        return web.Response(body=payload, headers={"Content-Type": content_type})


class AioService:
    """Lifecycle of one asyncio service process (see the module docstring)."""

    def __init__(self, name: str, common: CommonSettings, build_app: Callable[[ServiceContext], web.Application],
                 *, host: str = "127.0.0.1", port: int = 0, http_drain_seconds: float = HTTP_DRAIN_SECONDS):
        self.name = name
        self.common = common
        self._build_app = build_app
        self.host = host
        self.port = port
        self._drain = http_drain_seconds
        self.ctx: ServiceContext | None = None
        self.app: web.Application | None = None
        self._runner: web.AppRunner | None = None
        self._heartbeat: asyncio.Task | None = None

    async def start(self) -> None:
        metrics.configure(self.name, self.common.replica_id)
        amqp = await connect(self.common.amqp_uri, name=f"{self.name}@{self.common.replica_id}")
        redis_client = async_client(self.common.redis_url)
        publisher = EventPublisher(amqp, self.name)
        consumer = EventConsumer(amqp, self.name, self.common.replica_id, prefetch=self.common.prefetch,
                                 queue_arguments=self.common.queue_arguments(),
                                 dead_letter_arguments=self.common.queue_arguments(dead_letters=False))
        self.ctx = ServiceContext(self.name, self.common, amqp, redis_client, publisher, consumer)
        await publisher.start()
        self.app = self._build_app(self.ctx)
        self.app.on_shutdown.append(self._close_sockets_on_shutdown)
        self._runner = web.AppRunner(self.app, shutdown_timeout=self._drain, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        await consumer.start()
        beat = heartbeat.Beat(self.name, self.common.replica_id, time.time(), http=f"{self.host}:{self.port}")
        self._heartbeat = asyncio.create_task(self._beat(beat, redis_client))
        log.info("service_started", host=self.host, port=self.port)

    async def _beat(self, beat: heartbeat.Beat, client: redis.asyncio.Redis) -> None:
        while True:
            try:
                await beat.write_async(client, time.time())
            except Exception as exc:  # noqa: BLE001 - Redis away: try again next time, keep serving
                log.warning("heartbeat_failed", error=repr(exc))
            await asyncio.sleep(heartbeat.INTERVAL_SECONDS)

    async def close_websockets(self, code: int = WSCloseCode.GOING_AWAY, message: str = "going away") -> None:
        if self.ctx is None:
            return
        sockets = list(self.ctx.websockets)
        await asyncio.gather(*(ws.close(code=code, message=message.encode()) for ws in sockets), return_exceptions=True)

    async def _close_sockets_on_shutdown(self, _app: web.Application) -> None:
        await self.close_websockets(WSCloseCode.GOING_AWAY, "server shutting down")

    async def stop(self) -> None:
        log.info("service_stopping")
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
            if self.ctx is not None:
                try:  # gone from `ticketmesh status` at once, not when the key expires
                    await heartbeat.Beat(self.name, self.common.replica_id, 0).forget_async(self.ctx.redis)
                except Exception:  # noqa: BLE001 - it expires anyway
                    pass
        if self.ctx is not None:
            # The consumer first: its in-flight handlers finish while everything they use is
            # still up. The app's cleanup (below) tears down background loops and sessions
            # (the notifier's delivery loop and robot poster); a handler still taking new
            # messages meanwhile would ack work it could no longer do.
            await self.ctx.consumer.stop()
        if self._runner is not None:
            await self._runner.cleanup()  # stop listening, close sockets, drain requests, app cleanup
            self._runner = None
        if self.ctx is not None:
            await self.ctx.amqp.close()
            await self.ctx.redis.aclose()
            self.ctx = None
        log.info("service_stopped")


def run_service(service: AioService) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully (the body of a service's ``__main__``)."""
    common = service.common
    configure_logging(service.name, level=common.log_level, fmt=common.log_format, replica=common.replica_id)

    async def main() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        await service.start()
        await stopping.wait()
        await service.stop()

    asyncio.run(main())
