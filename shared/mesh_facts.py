"""Cheap reads of the mesh's state for ``ticketmesh status`` and the scrape-time gauges.

Each reader goes through the owning store's key names (agent_desk, dispatcher, sla_watcher),
never its own copies, so a store renaming a key moves these along.
"""
from __future__ import annotations

import json
from collections import Counter
from typing import Any, Callable, Iterable

from services.agent_desk.history_store import HistoryStore
from services.agent_desk.store import DeskStore
from services.dispatcher.store import DispatchStore
from services.sla_watcher.store import SlaStore

VIEW_CHUNK = 500              # ticket views read per MGET
SLA_SOON_SECONDS = 15 * 60    # "due soon" in the status view

OPEN_KEY = HistoryStore.OPEN
QUEUED_KEY = DeskStore._QUEUED     # noqa: SLF001 - the desk store's index, read-only here
SLA_RISK_KEY = DeskStore._SLA_RISK  # noqa: SLF001
PRESENCE_KEY = DispatchStore.presence_key
SLA_DUE_KEY = SlaStore.due_key


async def ticket_gauges(client: Any) -> dict[str, int]:
    """Three ZCARDs (asyncio client): unresolved, waiting for an agent, SLA at risk."""
    pipe = client.pipeline(transaction=False)
    pipe.zcard(OPEN_KEY)
    pipe.zcard(QUEUED_KEY)
    pipe.zcard(SLA_RISK_KEY)
    open_, queued, at_risk = await pipe.execute()
    return {"open": open_, "queued": queued, "sla_at_risk": at_risk}


def agents_by_presence(client: Any) -> dict[str, int]:
    return dict(Counter(client.hvals(PRESENCE_KEY)))


def open_tickets_by_status(client: Any, progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """Status of every unresolved ticket, from agent_desk's views (``unknown`` when a view expired)."""
    ids = client.zrange(OPEN_KEY, 0, -1)
    counts: Counter[str] = Counter()
    for start in range(0, len(ids), VIEW_CHUNK):
        chunk = ids[start:start + VIEW_CHUNK]
        for raw in client.mget([DeskStore._ticket(t) for t in chunk]):  # noqa: SLF001
            counts[_status_of(raw)] += 1
        if progress is not None:
            progress(min(start + VIEW_CHUNK, len(ids)), len(ids))
    return dict(counts)


def _status_of(raw: str | None) -> str:
    if raw is None:
        return "unknown"
    try:
        return str(json.loads(raw).get("status") or "unknown")
    except (ValueError, AttributeError):
        return "unknown"


def sla_summary(client: Any, now: float) -> dict[str, int]:
    pipe = client.pipeline(transaction=False)
    pipe.zcard(SLA_RISK_KEY)
    pipe.zcount(SLA_DUE_KEY, "-inf", repr(now))
    pipe.zcount(SLA_DUE_KEY, f"({now!r}", repr(now + SLA_SOON_SECONDS))
    at_risk, overdue, soon = pipe.execute()
    return {"at_risk": at_risk, "due_now": overdue, "due_next_15m": soon}


def queue_rows(queues: Iterable[dict]) -> list[dict]:
    """Management API queue objects → rows, deepest first."""
    rows = [{"queue": q.get("name", ""), "messages": q.get("messages", 0) or 0,
             "ready": q.get("messages_ready", 0) or 0, "unacked": q.get("messages_unacknowledged", 0) or 0,
             "consumers": q.get("consumers", 0) or 0} for q in queues]
    return sorted(rows, key=lambda r: (-r["messages"], r["queue"]))
