"""Redis clients with the mesh's retry policy, for both runtimes.

Stores (one class per service, owning its keys) take one of these clients; a command that
meets a dropped connection is retried with backoff before the error reaches the caller, and a
consumer treats what remains as transient (the message goes back to its queue).
"""
from __future__ import annotations

import redis
import redis.asyncio
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

RETRIES = 5
_RETRY_ON = [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]


def sync_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url, decode_responses=True, health_check_interval=15, socket_connect_timeout=5, socket_timeout=10,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), RETRIES), retry_on_error=_RETRY_ON,
    )


def async_client(url: str) -> redis.asyncio.Redis:
    from redis.asyncio.retry import Retry as AsyncRetry

    return redis.asyncio.Redis.from_url(
        url, decode_responses=True, health_check_interval=15, socket_connect_timeout=5, socket_timeout=10,
        retry=AsyncRetry(ExponentialBackoff(cap=2.0, base=0.1), RETRIES), retry_on_error=_RETRY_ON,
    )
