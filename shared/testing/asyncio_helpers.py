"""Small helpers for asyncio service tests: a free loopback port, and waiting on a condition.

``wait_until`` polls a condition with a deadline; use it where no event or future exists to
await (a file appearing, a Redis key being written). It is not a sleep: it returns as soon as
the condition holds and fails with ``message`` when the deadline passes.
"""
from __future__ import annotations

import asyncio
import inspect
import random
import socket
import time
from typing import Any, Awaitable, Callable

POLL_INTERVAL_SECONDS = 0.02


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = open("/proc/sys/net/ipv4/ip_local_port_range").read().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now, for servers that refuse port 0 (like aiosmtpd).

    Chosen outside the kernel's ephemeral range: a port from that range (what binding port 0
    gives) is also handed to outgoing connections, so between picking it and the server binding
    it a browser's or a client's socket could take it.
    """
    low, high = _ephemeral_range()
    ranges = [r for r in ((20000, min(low, 32768) - 1), (high + 1, 65535)) if r[1] - r[0] > 1000]
    for _ in range(200):
        start, end = random.choice(ranges) if ranges else (1024, 65535)
        port = random.randint(start, end)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found outside the ephemeral range")


async def wait_until(condition: Callable[[], Any | Awaitable[Any]], timeout: float = 10.0,
                     message: str = "condition") -> Any:
    """Return the condition's first truthy value; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not met within {timeout}s")
        await asyncio.sleep(POLL_INTERVAL_SECONDS)


async def wait_healthy(base_url: str, timeout: float = 20.0) -> None:
    """Wait until ``GET <base_url>/healthz`` answers 200 (a service process that is starting)."""
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async def healthy() -> bool:
            try:
                async with http.get(f"{base_url}/healthz") as resp:
                    return resp.status == 200
            except aiohttp.ClientConnectionError:
                return False

        await wait_until(healthy, timeout, f"{base_url}/healthz answering 200")
