"""The service's background loops (missed-reply sweep, queue refresh): started with the app,
stopped before Redis and the broker close."""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from aiohttp import web

from shared.logging import get_logger

log = get_logger(__name__)

STOP_WAIT_SECONDS = 5.0


async def stoppable_sleep(seconds: float) -> None:
    """Sleep, but end the loop if a cancellation was asked for and swallowed on the way (a
    client library that catches CancelledError leaves the task "cancelling" yet running)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
    await asyncio.sleep(seconds)


def run_in_background(app: web.Application, name: str, run: Callable[[], Any]) -> None:
    """Run ``run()`` while the app is up; cancelled on cleanup."""
    tasks: list[asyncio.Task] = []

    async def start(_app: web.Application) -> None:
        tasks.append(asyncio.create_task(run(), name=name))

    async def stop(_app: web.Application) -> None:
        task = tasks.pop()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=STOP_WAIT_SECONDS)
        if not done:
            log.warning("background_task_not_stopped", task=name)

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
