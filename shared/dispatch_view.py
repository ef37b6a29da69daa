"""A read-only window on the dispatcher's live queue, for customer-facing waits (asyncio Redis).

The dispatcher owns these keys (:mod:`services.dispatcher.store`) and is their only writer; this
module only reads the few it needs to tell a waiting customer where they stand, so the estimate
follows the real queue (relaxation, escalation, priority changes) instead of a copy rebuilt from
events. It reads, per look: the ticket's hash (state, queue, priority, assignee) and its rank in
its requirement's queue — two round trips for any number of tickets — and, for seats, the
presence, capacity and load hashes (one round trip, sized by the roster; callers cache it for a
few seconds). ``services/intake_chat/tests/service/test_dispatch_view.py`` writes through the
dispatcher's own store and reads through this module, so a change of layout fails a test.

Why not events: position needs every ticket ahead of this one in its requirement's queue, and
``ticket_queued`` does not carry the requirement or the SLA due time the queue is ordered by;
rebuilding the dispatcher's ordering from events would duplicate it and drift.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import redis.asyncio

PREFIX = "tm:dispatcher:"  # services.dispatcher.store.PREFIX
_TICKET_FIELDS = ("state", "queue", "priority", "received_at", "customer_tier", "agent_id", "accepted_by",
                  "channel")


@dataclass(frozen=True)
class RoutingView:
    ticket_id: str
    state: str | None            # new | queued | assigned | resolved; None = not seen by the dispatcher
    position: int | None = None  # 1-based place in its requirement's queue while queued
    queue_length: int | None = None
    priority: str | None = None
    received_at: datetime | None = None
    customer_tier: str = "standard"
    agent_id: str | None = None
    accepted: bool = False


@dataclass(frozen=True)
class ChannelSeats:
    agents_online: int
    seats: int
    free: int


async def routing_views(client: redis.asyncio.Redis, ticket_ids: list[str]) -> dict[str, RoutingView]:
    """Where each ticket stands in routing (two pipelined round trips for all of them)."""
    if not ticket_ids:
        return {}
    async with client.pipeline(transaction=False) as pipe:
        for ticket_id in ticket_ids:
            pipe.hmget(f"{PREFIX}ticket:{ticket_id}", _TICKET_FIELDS)
        rows = await pipe.execute()
    fields = {t: dict(zip(_TICKET_FIELDS, row)) for t, row in zip(ticket_ids, rows)}
    queued = [t for t in ticket_ids if fields[t]["state"] == "queued" and fields[t]["queue"]]
    ranks: dict[str, tuple[int | None, int]] = {}
    if queued:
        async with client.pipeline(transaction=False) as pipe:
            for ticket_id in queued:
                queue_key = f"{PREFIX}q:{fields[ticket_id]['queue']}"
                pipe.zrank(queue_key, ticket_id)
                pipe.zcard(queue_key)
            replies = await pipe.execute()
        for i, ticket_id in enumerate(queued):
            ranks[ticket_id] = (replies[2 * i], replies[2 * i + 1])
    views = {}
    for ticket_id in ticket_ids:
        f = fields[ticket_id]
        rank, length = ranks.get(ticket_id, (None, None))
        received = f["received_at"]
        views[ticket_id] = RoutingView(
            ticket_id=ticket_id, state=f["state"], position=None if rank is None else rank + 1, queue_length=length,
            priority=f["priority"], received_at=datetime.fromisoformat(received) if received else None,
            customer_tier=f["customer_tier"] or "standard", agent_id=f["agent_id"] or None,
            accepted=bool(f["accepted_by"]),
        )
    return views


async def channel_seats(client: redis.asyncio.Redis, channel: str) -> ChannelSeats:
    """Agents online with capacity on ``channel``, their capacity in total and how much is unused."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(f"{PREFIX}presence")
        pipe.hgetall(f"{PREFIX}capacity")
        pipe.hgetall(f"{PREFIX}load")
        presence, capacity, load = await pipe.execute()
    online = seats = free = 0
    suffix = f":{channel}"
    for slot, cap in capacity.items():
        if not slot.endswith(suffix):
            continue
        agent_id = slot[: -len(suffix)]
        cap = int(cap)
        if presence.get(agent_id) != "online" or cap <= 0:
            continue
        online += 1
        seats += cap
        free += max(cap - int(load.get(slot) or 0), 0)
    return ChannelSeats(online, seats, free)
