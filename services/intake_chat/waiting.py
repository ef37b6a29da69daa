"""Telling waiting customers where they stand (place in the queue, expected wait, no agents).

Each replica watches the tickets of its own sockets whose customer has not had an agent reply
yet. Every ``refresh`` seconds it reads the live routing state of all of them at once
(:mod:`shared.dispatch_view`: two round trips for the tickets, one for the seats, cached for
the refresh period) and sends a ``queue`` frame to a socket only when what it would say
changed. Zammad re-broadcasts queue positions to waiting chats the same way; Chatwoot has no
queue at all (its users ask for one, #13050).
"""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

import redis.asyncio

from shared import dispatch_view
from shared.logging import get_logger
from shared.sla_policy import Policy, expected_first_response

from services.intake_chat import queue_eta
from services.intake_chat.tasks import stoppable_sleep

log = get_logger(__name__)

DEFAULT_PRIORITY = "P3"  # before the dispatcher classified the ticket
CHANNEL = "chat"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class QueueWatch:
    def __init__(self, client: redis.asyncio.Redis, policies: tuple[Policy, ...], *, handle_seconds: float,
                 refresh_seconds: float, agent_names: dict[str, str], clock: Callable[[], datetime] = _utcnow):
        self.client = client
        self.policies = policies
        self.handle_seconds = handle_seconds
        self.refresh_seconds = refresh_seconds
        self.agent_names = agent_names
        self.clock = clock
        # ticket → (send(frame) for each watching socket, last frame sent)
        self._watched: dict[str, dict[Any, Callable[[dict], Awaitable[bool]]]] = {}
        self._opened_at: dict[str, datetime] = {}
        self._last: dict[str, dict] = {}
        self._seats: tuple[float, dispatch_view.ChannelSeats] | None = None

    def watch(self, ticket_id: str, who: Any, send: Callable[[dict], Awaitable[bool]]) -> None:
        self._watched.setdefault(ticket_id, {})[who] = send
        self._opened_at.setdefault(ticket_id, self.clock())

    def unwatch(self, who: Any, ticket_id: str | None = None) -> None:
        tickets = [ticket_id] if ticket_id else list(self._watched)
        for ticket in tickets:
            watchers = self._watched.get(ticket)
            if watchers is None:
                continue
            watchers.pop(who, None)
            if not watchers:
                del self._watched[ticket]
                self._last.pop(ticket, None)
                self._opened_at.pop(ticket, None)

    def watched(self) -> set[str]:
        return set(self._watched)

    def is_watching(self, ticket_id: str, who: Any) -> bool:
        return who in self._watched.get(ticket_id, {})

    def answered(self, ticket_id: str) -> None:
        """An agent replied: nobody waits on this ticket any more."""
        self._watched.pop(ticket_id, None)
        self._last.pop(ticket_id, None)
        self._opened_at.pop(ticket_id, None)

    async def seats(self) -> dispatch_view.ChannelSeats:
        now = time.monotonic()
        if self._seats is None or now - self._seats[0] >= self.refresh_seconds:
            self._seats = (now, await dispatch_view.channel_seats(self.client, CHANNEL))
        return self._seats[1]

    async def statuses(self, ticket_ids: list[str]) -> dict[str, queue_eta.QueueStatus]:
        views = await dispatch_view.routing_views(self.client, ticket_ids)
        seats = await self.seats()
        now = self.clock()
        result = {}
        for ticket_id, view in views.items():
            received = view.received_at or self._opened_at.get(ticket_id) or now
            respond_by = expected_first_response(self.policies, priority=view.priority or DEFAULT_PRIORITY,
                                                 channel=CHANNEL, received_at=received,
                                                 customer_tier=view.customer_tier)
            result[ticket_id] = queue_eta.queue_status(
                routing_state=view.state, position=view.position, agent_id=view.agent_id,
                seats=queue_eta.Seats(seats.agents_online, seats.seats, seats.free),
                respond_by=respond_by, now=now, handle_seconds=self.handle_seconds)
        return result

    def frame(self, status: queue_eta.QueueStatus) -> dict:
        return status.frame(self.agent_names.get(status.agent_id or "", ""))

    async def refresh(self, only: str | None = None) -> int:
        """Send changed statuses (to ``only``'s watchers, or all); returns frames sent."""
        tickets = [only] if only else list(self._watched)
        tickets = [t for t in tickets if t in self._watched]
        if not tickets:
            return 0
        sent = 0
        for ticket_id, status in (await self.statuses(tickets)).items():
            frame = self.frame(status)
            if self._last.get(ticket_id) == frame or ticket_id not in self._watched:
                continue
            self._last[ticket_id] = frame
            results = await asyncio.gather(*(send(frame) for send in list(self._watched[ticket_id].values())))
            sent += sum(results)
        return sent

    def forget_last(self, ticket_id: str) -> None:
        """A new socket joined: send it the status even if it did not change."""
        self._last.pop(ticket_id, None)

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis away: the next round tries again
                log.warning("queue_refresh_failed", error=repr(exc))
            await stoppable_sleep(self.refresh_seconds)
