"""Configuration from environment variables, with documented defaults.

Only config modules read the environment; everything else receives values as arguments.
Every variable the mesh reads is listed in ``COMMON_VARIABLES`` or in a service's own
``config.py``, and ``ticketmesh config`` prints them all with their defaults.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Callable, Mapping, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration variable is missing or has a value that cannot be used."""


@dataclass(frozen=True)
class Variable:
    name: str
    default: str | None
    help: str


COMMON_VARIABLES = (
    Variable("TM_AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/", "RabbitMQ connection URI (vhost in the path)"),
    Variable("TM_REDIS_URL", "redis://127.0.0.1:6379/0", "Redis URL (database number in the path)"),
    Variable("TM_LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR"),
    Variable("TM_LOG_FORMAT", "json", "json (production) or console (human-readable)"),
    Variable("TM_DATA_DIR", "var", "directory for attachments, raw mail and other files"),
    Variable("TM_REPLICA_ID", "", "name of this replica in logs and metrics (default: host:pid)"),
    Variable("TM_QUEUE_TYPE", "classic", "classic (dev, tests) or quorum (production: replicated queues with broker dead-lettering; see docs/operations.md before switching)"),
    Variable("TM_QUEUE_DELIVERY_LIMIT", "20", "quorum queues: deliveries without an ack before RabbitMQ dead-letters a message"),
    Variable("TM_RABBIT_MGMT_URL", "http://guest:guest@127.0.0.1:15672", "RabbitMQ management API (ticketmesh status: queue depths, dead letters)"),
    Variable("TM_PREFETCH", "32", "unacknowledged messages a consumer may hold (nameko services: their worker pool size, which nameko uses as prefetch)"),
)


def read(environ: Mapping[str, str], name: str, default: str | None, cast: Callable[[str], T] = str) -> T:
    """Read one variable and cast it, failing with a message that names the variable."""
    raw = environ.get(name, default)
    if raw is None:
        raise ConfigError(f"{name} is required but not set")
    try:
        return cast(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}={raw!r} is not valid: {exc}") from None


def as_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true/false")


def as_log_format(raw: str) -> str:
    if raw not in ("json", "console"):
        raise ValueError("expected json or console")
    return raw


def as_queue_type(raw: str) -> str:
    if raw not in ("classic", "quorum"):
        raise ValueError("expected classic or quorum")
    return raw


def as_positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("expected a whole number of at least 1")
    return value


@dataclass(frozen=True)
class CommonSettings:
    """Settings every service shares."""

    amqp_uri: str
    redis_url: str
    log_level: str
    log_format: str
    data_dir: str
    replica_id: str
    prefetch: int
    queue_type: str = "classic"
    delivery_limit: int = 20

    def queue_arguments(self, *, dead_letters: bool = True) -> dict[str, object]:
        from shared.topology import queue_arguments
        return queue_arguments(self.queue_type, delivery_limit=self.delivery_limit, dead_letters=dead_letters)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "CommonSettings":
        defaults = {v.name: v.default for v in COMMON_VARIABLES}
        return cls(
            amqp_uri=read(environ, "TM_AMQP_URI", defaults["TM_AMQP_URI"]),
            redis_url=read(environ, "TM_REDIS_URL", defaults["TM_REDIS_URL"]),
            log_level=read(environ, "TM_LOG_LEVEL", defaults["TM_LOG_LEVEL"], str.upper),
            log_format=read(environ, "TM_LOG_FORMAT", defaults["TM_LOG_FORMAT"], as_log_format),
            data_dir=read(environ, "TM_DATA_DIR", defaults["TM_DATA_DIR"]),
            replica_id=read(environ, "TM_REPLICA_ID", "") or f"{socket.gethostname()}:{os.getpid()}",
            prefetch=read(environ, "TM_PREFETCH", defaults["TM_PREFETCH"], int),
            queue_type=read(environ, "TM_QUEUE_TYPE", defaults["TM_QUEUE_TYPE"], as_queue_type),
            delivery_limit=read(environ, "TM_QUEUE_DELIVERY_LIMIT", defaults["TM_QUEUE_DELIVERY_LIMIT"], as_positive_int),
        )
