"""``/healthz``, ``/readyz`` and ``/metrics`` for the nameko services, and their heartbeat.

A service class adds them by inheriting::

    class DispatcherService(HealthEndpoints):
        name = ev.DISPATCHER

        def refresh_gauges(self, client: redis.Redis) -> None:   # optional: scrape-time gauges
            metrics.set_agents(...)

nameko's ``@http`` entrypoint serves them on ``WEB_SERVER_ADDRESS`` (the service's config
module maps ``TM_<SERVICE>_HEALTH_HOST``/``_PORT`` to it); without one (embedded, tests) the
server binds a free loopback port rather than nameko's 0.0.0.0:8000 that two containers on a
host would fight over. intake_email keeps its own ``/healthz`` and ``/readyz`` (it judges its
mailboxes too) and inherits only :class:`MetricsEndpoint`.

``/readyz`` is 200 when Redis answers PING, RabbitMQ accepts a connection and the container's
consumers run; 503 with the failing checks otherwise.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Any

import eventlet
import kombu
from nameko.extensions import DependencyProvider
from nameko.messaging import QueueConsumer
from nameko.web.server import WebServer
from nameko.web.handlers import http

from shared import heartbeat, metrics
from shared.logging import get_logger
from shared.nameko_ext import REDIS_URL_KEY
from shared.redis_store import sync_client

log = get_logger(__name__)

WEB_SERVER_CONFIG_KEY = "WEB_SERVER_ADDRESS"
REPLICA_ID_KEY = "TM_REPLICA_ID"
CHECK_TIMEOUT_SECONDS = 2.0
_JSON = {"Content-Type": "application/json"}


class Observability(DependencyProvider):
    """The container's identity in metrics, a Redis client for checks and gauges, the heartbeat."""

    def setup(self) -> None:
        config = self.container.config
        config.setdefault(WEB_SERVER_CONFIG_KEY, "127.0.0.1:0")  # every setup runs before the web server starts
        # run_service passes TM_REPLICA_ID; an embedded container (tests) is named like CommonSettings does
        self.replica = str(config.get(REPLICA_ID_KEY) or f"{socket.gethostname()}:{os.getpid()}")
        metrics.configure(self.container.service_name, self.replica)
        self.client = sync_client(config[REDIS_URL_KEY])
        self.amqp_uri = config["AMQP_URI"]
        self._stop = threading.Event()

    def start(self) -> None:
        self.container.spawn_managed_thread(self._beat, identifier="heartbeat")

    def stop(self) -> None:
        self._stop.set()
        try:
            heartbeat.Beat(self.container.service_name, self.replica, 0).forget(self.client)
        except Exception:  # noqa: BLE001 - it expires anyway
            pass
        self.client.close()

    def kill(self) -> None:
        self._stop.set()

    def _beat(self) -> None:
        started = time.time()
        while not self._stop.is_set():
            beat = heartbeat.Beat(self.container.service_name, self.replica, started, http=self.http_address())
            try:
                beat.write(self.client, time.time())
            except Exception as exc:  # noqa: BLE001 - Redis away: next time
                log.warning("heartbeat_failed", error=repr(exc))
            self._stop.wait(heartbeat.INTERVAL_SECONDS)  # woken at once by stop()

    def http_address(self) -> str:
        """``host:port`` the web server listens on (the bound port when configured as 0)."""
        for ext in self.container.subextensions:
            sock = getattr(ext, "_sock", None)
            if isinstance(ext, WebServer) and sock is not None:
                host, port = sock.getsockname()[:2]
                return f"{host}:{port}"
        return ""

    def consumers_running(self) -> bool:
        # nameko keeps these private: ready once its consumers are declared, dead if its thread ended.
        consumers = [e for e in self.container.subextensions if isinstance(e, QueueConsumer)]
        return not self.container._being_killed and all(  # noqa: SLF001
            c._consumers_ready.ready() and c._gt is not None and not c._gt.dead for c in consumers)  # noqa: SLF001

    def rabbitmq_reachable(self) -> bool:
        try:
            with kombu.Connection(self.amqp_uri, connect_timeout=CHECK_TIMEOUT_SECONDS) as conn:
                conn.connect()
            return True
        except Exception:  # noqa: BLE001 - unreachable is the answer
            return False

    def redis_ok(self) -> bool:
        # redis-py retries a refused connection with backoff; a probe must answer in bounded time.
        try:
            with eventlet.Timeout(CHECK_TIMEOUT_SECONDS):
                return bool(self.client.ping())
        except (Exception, eventlet.Timeout):  # noqa: BLE001 - unreachable is the answer
            return False

    def get_dependency(self, worker_ctx: Any) -> "Observability":
        return self


class MetricsEndpoint:
    """``GET /metrics`` and the heartbeat; a service may define ``refresh_gauges(client)``."""

    observability = Observability()

    @http("GET", "/metrics")
    def metrics(self, request: Any) -> tuple[int, dict, str]:
        refresh = getattr(self, "refresh_gauges", None)
        if refresh is not None:
            try:
                refresh(self.observability.client)
            except Exception as exc:  # noqa: BLE001 - counters still render; gauges keep their last value
                log.warning("metrics_gauges_failed", error=repr(exc))
        payload, content_type = metrics.render()
        return 200, {"Content-Type": content_type}, payload.decode()  # nameko's @http takes str only


class HealthEndpoints(MetricsEndpoint):
    @http("GET", "/healthz")
    def healthz(self, request: Any) -> tuple[int, dict, str]:
        service, replica = metrics.identity()
        return 200, _JSON, json.dumps({"alive": True, "service": service, "replica": replica})

    @http("GET", "/readyz")
    def readyz(self, request: Any) -> tuple[int, dict, str]:
        obs = self.observability
        checks = {"redis": obs.redis_ok(), "rabbitmq": obs.rabbitmq_reachable(), "consumers": obs.consumers_running()}
        ready = all(checks.values())
        service, replica = metrics.identity()
        body = {"ready": ready, "service": service, "replica": replica,
                "checks": {name: "ok" if ok else "failing" for name, ok in checks.items()}}
        return (200 if ready else 503), _JSON, json.dumps(body)
