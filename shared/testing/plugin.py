"""pytest fixtures for tests that talk to the real servers.

- ``amqp_uri``: a fresh RabbitMQ vhost per test (created and deleted through the management
  API), so durable queues and leftovers of one test never reach another.
- ``redis_url``: the Redis database ``TM_TEST_REDIS_DB`` (default 15), flushed before and after.
- ``event_listener`` (blocking, kombu) and ``AsyncEventListener`` wait for events on an
  exchange with a timeout, instead of sleeping.

A server that is not reachable fails the test with a message saying how to start it; nothing
here skips. The test command (``./dev test``) starts the servers first.
"""
from __future__ import annotations

import base64
import json
import os
import queue as queue_mod
import time
import urllib.error
import urllib.request
import uuid
from typing import Any, Callable
from urllib.parse import quote, urlsplit

import pytest
import redis

MGMT_URL = os.environ.get("TM_TEST_RABBIT_MGMT", "http://guest:guest@127.0.0.1:15672")
AMQP_BASE = os.environ.get("TM_TEST_AMQP_BASE", "amqp://guest:guest@127.0.0.1:5672")
REDIS_BASE = os.environ.get("TM_TEST_REDIS_BASE", "redis://127.0.0.1:6379")
REDIS_DB = int(os.environ.get("TM_TEST_REDIS_DB", "15"))
HOW_TO_START = "run the tests with ./dev test, which starts RabbitMQ (with management) and Redis"


def _mgmt(method: str, path: str, body: dict | None = None) -> None:
    parts = urlsplit(MGMT_URL)
    url = f"{parts.scheme}://{parts.hostname}:{parts.port}/api{path}"
    req = urllib.request.Request(url, method=method, data=json.dumps(body or {}).encode())
    token = base64.b64encode(f"{parts.username}:{parts.password}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    req.add_header("Content-Type", "application/json")
    try:
        urllib.request.urlopen(req, timeout=10).read()
    except urllib.error.HTTPError as exc:
        if not (method == "DELETE" and exc.code == 404):
            raise
    except OSError as exc:
        pytest.fail(f"RabbitMQ management API at {url} is not reachable ({exc}); {HOW_TO_START}", pytrace=False)


def create_vhost(prefix: str = "tm-test") -> str:
    vhost = f"{prefix}-{uuid.uuid4().hex[:10]}"
    _mgmt("PUT", f"/vhosts/{quote(vhost, safe='')}")
    user = urlsplit(AMQP_BASE).username or "guest"
    _mgmt("PUT", f"/permissions/{quote(vhost, safe='')}/{user}", {"configure": ".*", "write": ".*", "read": ".*"})
    _wait_until_open(f"{AMQP_BASE}/{quote(vhost, safe='')}")
    return vhost


def _wait_until_open(uri: str, timeout: float = 10.0) -> None:
    # Permissions reach the node a moment after the API answers; the first connection can be
    # refused in that window.
    import kombu

    deadline = time.monotonic() + timeout
    while True:
        try:
            with kombu.Connection(uri, connect_timeout=2) as conn:
                conn.connect()
            return
        except Exception:  # noqa: BLE001
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def delete_vhost(vhost: str) -> None:
    _mgmt("DELETE", f"/vhosts/{quote(vhost, safe='')}")


@pytest.fixture
def amqp_uri() -> Any:
    vhost = create_vhost()
    yield f"{AMQP_BASE}/{quote(vhost, safe='')}"
    delete_vhost(vhost)


@pytest.fixture
def redis_url() -> Any:
    url = f"{REDIS_BASE}/{REDIS_DB}"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"Redis at {REDIS_BASE} is not reachable ({exc}); {HOW_TO_START}", pytrace=False)
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def service_container(amqp_uri: str, redis_url: str, container_factory: Any) -> Any:
    """``make(ServiceCls, **extra_config)`` -> a nameko container on this test's vhost and Redis DB.

    Requesting ``amqp_uri`` before ``container_factory`` makes containers stop before the vhost
    is deleted (fixtures tear down in reverse order).
    """

    def make(service_cls: type, **extra: Any) -> Any:
        config = {"AMQP_URI": amqp_uri, "TM_REDIS_URL": redis_url, "serializer": "json", "max_workers": 4, **extra}
        return container_factory(service_cls, config)

    return make


@pytest.fixture
async def publish_event(amqp_uri: str) -> Any:
    """``await publish_event(source, event_type, body)``: publish as ``source`` would (confirmed)."""
    from shared.amqp import EventPublisher, connect

    connection = await connect(amqp_uri, name="test-publisher")
    publishers: dict[str, EventPublisher] = {}

    async def publish(source: str, event_type: str, body: dict) -> None:
        if source not in publishers:
            publishers[source] = EventPublisher(connection, source)
            await publishers[source].start()
        await publishers[source].publish(event_type, body)

    yield publish
    await connection.close()


@pytest.fixture
def redis_client(redis_url: str) -> Any:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def poll_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Blocking tests: return ``predicate()``'s first truthy value, AssertionError after ``timeout``.

    For state with no event to wait on (a Redis key written by a worker); it returns as soon as
    the state holds, so it is a bounded wait, not a sleep.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.02)


class EventListener:
    """Blocking listener (for nameko tests): binds an exclusive queue to ``<source>.events``."""

    def __init__(self, amqp_uri: str, source: str, event_types: list[str] | None = None):
        import kombu

        self._conn = kombu.Connection(amqp_uri)
        exchange = kombu.Exchange(f"{source}.events", type="topic", durable=True)
        self._received: queue_mod.Queue = queue_mod.Queue()
        bindings = [kombu.binding(exchange, routing_key=t) for t in (event_types or ["#"])]
        self._queue = kombu.Queue(f"test-listener-{uuid.uuid4().hex[:8]}", bindings=bindings, exclusive=True, auto_delete=True)
        self._consumer = self._conn.Consumer(self._queue, callbacks=[self._on_message], accept=["json"])
        self._consumer.consume()

    def _on_message(self, body: Any, message: Any) -> None:
        self._received.put((message.delivery_info["routing_key"], body))
        message.ack()

    def wait_for(self, predicate: Callable[[str, dict], bool], timeout: float = 10.0) -> tuple[str, dict]:
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                self._conn.drain_events(timeout=min(0.2, max(0.01, deadline - time.monotonic())))
            except (TimeoutError, OSError):
                pass
            while not self._received.empty():
                event_type, body = self._received.get_nowait()
                seen.append(event_type)
                if predicate(event_type, body):
                    return event_type, body
        raise AssertionError(f"no matching event within {timeout}s; saw {seen}")

    def close(self) -> None:
        self._conn.release()


@pytest.fixture
def event_listener(amqp_uri: str) -> Any:
    listeners: list[EventListener] = []

    def make(source: str, event_types: list[str] | None = None) -> EventListener:
        listener = EventListener(amqp_uri, source, event_types)
        listeners.append(listener)
        return listener

    yield make
    for listener in listeners:
        listener.close()


class AsyncEventListener:
    """asyncio listener: ``async with AsyncEventListener(uri, "dispatcher") as l: await l.wait_for(...)``."""

    def __init__(self, amqp_uri: str, source: str, event_types: list[str] | None = None):
        self.amqp_uri, self.source, self.event_types = amqp_uri, source, event_types or ["#"]
        self.events: list[tuple[str, dict]] = []

    async def __aenter__(self) -> "AsyncEventListener":
        import asyncio

        import aio_pika

        self._cond = asyncio.Condition()
        self._conn = await aio_pika.connect(self.amqp_uri)
        channel = await self._conn.channel()
        exchange = await channel.declare_exchange(f"{self.source}.events", aio_pika.ExchangeType.TOPIC, durable=True)
        q = await channel.declare_queue(exclusive=True, auto_delete=True)
        for t in self.event_types:
            await q.bind(exchange, routing_key=t)

        async def on_message(message: Any) -> None:
            async with message.process():
                async with self._cond:
                    self.events.append((message.routing_key, json.loads(message.body)))
                    self._cond.notify_all()

        await q.consume(on_message)
        return self

    async def wait_for(self, predicate: Callable[[str, dict], bool], timeout: float = 10.0) -> tuple[str, dict]:
        import asyncio

        async def _wait() -> tuple[str, dict]:
            async with self._cond:
                while True:
                    for item in self.events:
                        if predicate(*item):
                            return item
                    await self._cond.wait()

        try:
            return await asyncio.wait_for(_wait(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"no matching event within {timeout}s; saw {[e[0] for e in self.events]}") from None

    async def __aexit__(self, *exc: Any) -> None:
        await self._conn.close()


def dead_letters(amqp_uri: str, timeout: float = 10.0, expect: int = 1) -> list[tuple[dict, bytes]]:
    """Read (and ack) up to ``expect`` dead letters from the vhost, waiting up to ``timeout``."""
    import kombu

    from shared.topology import DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE

    got: list[tuple[dict, bytes]] = []

    def on_message(_body: Any, message: Any) -> None:
        raw = message.body
        got.append((dict(message.headers), raw.encode() if isinstance(raw, str) else raw))
        message.ack()

    exchange = kombu.Exchange(DEAD_LETTER_EXCHANGE, type="fanout", durable=True)
    dlq = kombu.Queue(DEAD_LETTER_QUEUE, exchange=exchange, routing_key="", durable=True)
    deadline = time.monotonic() + timeout
    with kombu.Connection(amqp_uri) as conn:
        with conn.Consumer(dlq, callbacks=[on_message], accept=None):
            while len(got) < expect and time.monotonic() < deadline:
                try:
                    conn.drain_events(timeout=min(0.2, max(0.01, deadline - time.monotonic())))
                except (TimeoutError, OSError):
                    pass
    return got
