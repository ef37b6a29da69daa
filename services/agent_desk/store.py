"""agent_desk's Redis state (keys ``tm:agent_desk:*``; this class is their only owner).

- ``tm:agent_desk:ticket:<ticket id>`` – the ticket view (JSON), ``VIEW_TTL_SECONDS`` after its
  last change. Changes are optimistic transactions (WATCH the view, apply a pure change,
  MULTI/EXEC) so replicas handling different events for one ticket never lose an update;
- ``tm:agent_desk:worklist:<agent id>`` – sorted set of the agent's unresolved tickets, scored
  by assignment time. It is an index of the views and changes in the same transaction;
- ``tm:agent_desk:presence:<agent id>`` – online / away / offline;
- ``tm:agent_desk:session:<session id>`` – the agent a signed-in browser belongs to (logout
  deletes it);
- ``tm:agent_desk:login_failures:<agent id>`` – failed sign-ins in the current window.
"""
from __future__ import annotations

from typing import Callable

import redis.asyncio
from redis.exceptions import WatchError

from services.agent_desk.tickets import TicketNotStored, TicketView
from shared.errors import TransientError

VIEW_TTL_SECONDS = 30 * 24 * 3600       # long enough for a ticket's whole life at the desk
PRESENCE_TTL_SECONDS = 30 * 24 * 3600   # forgotten presence reads as offline
LOGIN_FAILURE_WINDOW_SECONDS = 15 * 60
MAX_LOGIN_FAILURES = 10                 # per agent and window, then sign-in is refused for the window
_MAX_WATCH_RETRIES = 20


class DeskStore:
    def __init__(self, client: redis.asyncio.Redis):
        self._client = client

    # keys
    @staticmethod
    def _ticket(ticket_id: str) -> str:
        return f"tm:agent_desk:ticket:{ticket_id}"

    @staticmethod
    def _worklist(agent_id: str) -> str:
        return f"tm:agent_desk:worklist:{agent_id}"

    @staticmethod
    def _presence(agent_id: str) -> str:
        return f"tm:agent_desk:presence:{agent_id}"

    @staticmethod
    def _session(session_id: str) -> str:
        return f"tm:agent_desk:session:{session_id}"

    @staticmethod
    def _login_failures(agent_id: str) -> str:
        return f"tm:agent_desk:login_failures:{agent_id}"

    # tickets
    async def add_ticket(self, view: TicketView) -> bool:
        """Store a new ticket's view; False if it is already there (a redelivery)."""
        return bool(await self._client.set(self._ticket(view.ticket_id), view.model_dump_json(), nx=True,
                                           ex=VIEW_TTL_SECONDS))

    async def ticket(self, ticket_id: str) -> TicketView | None:
        raw = await self._client.get(self._ticket(ticket_id))
        return TicketView.model_validate_json(raw) if raw else None

    async def change_ticket(self, ticket_id: str, change: Callable[[TicketView], TicketView]) -> tuple[TicketView, TicketView]:
        """Apply ``change`` atomically; return (before, after). TicketNotStored if there is no view.

        ``change`` may raise (e.g. ActionRefused); nothing is written then.
        """
        key = self._ticket(ticket_id)
        for _ in range(_MAX_WATCH_RETRIES):
            async with self._client.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        raise TicketNotStored(ticket_id)
                    before = TicketView.model_validate_json(raw)
                    after = change(before)
                    if after == before:
                        return before, after
                    pipe.multi()
                    pipe.set(key, after.model_dump_json(), ex=VIEW_TTL_SECONDS)
                    self._index(pipe, before, after)
                    await pipe.execute()
                    return before, after
                except WatchError:
                    continue  # someone changed it meanwhile: read again and re-apply
        raise TransientError(f"ticket {ticket_id} kept changing under us")

    def _index(self, pipe: redis.asyncio.client.Pipeline, before: TicketView, after: TicketView) -> None:
        """Keep work lists in step with the views: an agent's unresolved tickets."""
        if before.agent_id and before.agent_id != after.agent_id:
            pipe.zrem(self._worklist(before.agent_id), after.ticket_id)
        if after.agent_id:
            worklist = self._worklist(after.agent_id)
            if after.status == "resolved":
                pipe.zrem(worklist, after.ticket_id)
            else:
                assigned = after.assigned_at or after.received_at
                pipe.zadd(worklist, {after.ticket_id: assigned.timestamp()})
                pipe.expire(worklist, VIEW_TTL_SECONDS)

    async def worklist(self, agent_id: str) -> list[TicketView]:
        ticket_ids = await self._client.zrange(self._worklist(agent_id), 0, -1)
        if not ticket_ids:
            return []
        raws = await self._client.mget([self._ticket(t) for t in ticket_ids])
        views = [TicketView.model_validate_json(raw) for raw in raws if raw]
        return [v for v in views if v.agent_id == agent_id and v.status != "resolved"]

    # presence
    async def presence(self, agent_id: str) -> str:
        return await self._client.get(self._presence(agent_id)) or "offline"

    async def set_presence(self, agent_id: str, presence: str) -> str:
        """Set and return the previous presence."""
        previous = await self._client.set(self._presence(agent_id), presence, ex=PRESENCE_TTL_SECONDS, get=True)
        return previous or "offline"

    # sessions and sign-in
    async def open_session(self, session_id: str, agent_id: str, ttl_seconds: int) -> None:
        await self._client.set(self._session(session_id), agent_id, ex=ttl_seconds)

    async def session_agent(self, session_id: str) -> str | None:
        return await self._client.get(self._session(session_id))

    async def close_session(self, session_id: str) -> None:
        await self._client.delete(self._session(session_id))

    async def login_locked(self, agent_id: str) -> bool:
        failures = await self._client.get(self._login_failures(agent_id))
        return int(failures or 0) >= MAX_LOGIN_FAILURES

    async def record_login_failure(self, agent_id: str) -> None:
        key = self._login_failures(agent_id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, LOGIN_FAILURE_WINDOW_SECONDS, nx=True)
            await pipe.execute()

    async def clear_login_failures(self, agent_id: str) -> None:
        await self._client.delete(self._login_failures(agent_id))
