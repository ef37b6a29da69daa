"""agent_desk's Redis state (keys ``tm:agent_desk:*``; this class is their only owner).

- ``tm:agent_desk:ticket:<ticket id>`` – the ticket view (JSON), ``VIEW_TTL_SECONDS`` after its
  last change. Changes are optimistic (read the view, apply a pure change, write it and its
  indexes in one script only if the view is still the one read, else again) so replicas
  handling different events for one ticket never lose an update. The view this replica last
  wrote is the first guess of "the one read" (no read round trip); the script answers a wrong
  guess with the stored view, and a change that a guess says is already made is checked
  against the stored view before anything is skipped;
- ``tm:agent_desk:worklist:<agent id>`` – sorted set of the agent's unresolved tickets, scored
  by assignment time. It is an index of the views and changes in the same transaction;
- ``tm:agent_desk:queued`` / ``tm:agent_desk:sla_risk`` – sorted sets of tickets waiting for an
  agent (by queue time) and of unresolved tickets with an SLA warning or breach (by due time);
  indexes of the views, changed in the same transaction;
- ``tm:agent_desk:customer:<hash of chat visitor id / email / phone / profile id>`` – the
  customer's tickets (by arrival), for the history panel (the profile's once it is classified);
- ``tm:agent_desk:decisions`` – the latest routing decisions across tickets (supervisor view);
- ``tm:agent_desk:presence:<agent id>`` – online / away / offline; ``tm:agent_desk:present``
  the agents not offline, ``tm:agent_desk:last_seen`` when each was last seen on a socket (or
  changed presence), refreshed by every replica for the sockets it holds;
  ``tm:agent_desk:offline_claim:<agent id>`` – the one replica announcing a lost agent;
- ``tm:agent_desk:token:<sha256 of token>`` – an API token's agent (hash: the token itself is
  never stored), ``tm:agent_desk:tokens:<agent id>`` the agent's token ids → hash and label;
- ``tm:agent_desk:session:<session id>`` – the agent a signed-in browser belongs to (logout
  deletes it);
- ``tm:agent_desk:login_failures:<agent id>`` – failed sign-ins in the current window.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

import redis.asyncio
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from services.agent_desk.tickets import (DecisionRecord, TicketNotStored, TicketView, customer_keys, profile_key,
                                        sla_state)
from shared.errors import TransientError
from shared.intake_ledger import natural_key_hash
from shared.redis_store import CHANGE_VALUE_LUA, Writes, change_value_call

VIEW_TTL_SECONDS = 30 * 24 * 3600       # long enough for a ticket's whole life at the desk
PRESENCE_TTL_SECONDS = 30 * 24 * 3600   # forgotten presence reads as offline
LOGIN_FAILURE_WINDOW_SECONDS = 15 * 60
MAX_LOGIN_FAILURES = 10                 # per agent and window, then sign-in is refused for the window
RECENT_DECISIONS_KEPT = 200
HISTORY_TICKETS_SHOWN = 20
BOARD_TICKETS_READ = 1000               # queued / at-risk tickets a supervisor board reads at most
OFFLINE_CLAIM_TTL_SECONDS = 30          # one replica announces a lost agent; a crashed one's claim lapses
_MAX_CHANGE_RETRIES = 20
VIEWS_REMEMBERED = 512                  # views last written here, kept as the next change's guess

# A new view (only if absent) and its customer-history entries (written again on a redelivery).
# KEYS: the view's key, then each customer key; ARGV: view, TTL, received_at, ticket id.
_ADD_VIEW = """
local stored = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2])
for i = 2, #KEYS do
  redis.call('ZADD', KEYS[i], ARGV[3], ARGV[4])
  redis.call('EXPIRE', KEYS[i], ARGV[2])
end
if stored then return 1 end
return 0
"""

# Claim the right to announce that ``agent`` lost every socket: still not offline, still not seen
# since the cutoff, and nobody else claimed it. Atomic, so with N replicas sweeping one wins.
_CLAIM_OFFLINE = """
local seen = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not seen or tonumber(seen) > tonumber(ARGV[2]) then return false end
local presence = redis.call('GET', KEYS[2])
if presence ~= 'online' and presence ~= 'away' then return false end
if not redis.call('SET', KEYS[3], ARGV[3], 'NX', 'EX', ARGV[4]) then return false end
return seen
"""


@dataclass(frozen=True)
class ScriptCall:
    """A script of another store sent in the same round trip as a view change, before it (the
    history's record of the event that changes the view): one write to Redis instead of two."""
    script: AsyncScript
    keys: list[str]
    args: list[str]


def _decision_member(ticket_id: str, record: DecisionRecord) -> str:
    return json.dumps({"ticket_id": ticket_id, **record.model_dump(mode="json")}, sort_keys=True)


class _ViewWrites(Writes):
    def zremrangebyrank(self, name: str, start: int, end: int) -> None:
        self._keyed("ZREMRANGEBYRANK", name, start, end)


class DeskStore:
    def __init__(self, client: redis.asyncio.Redis):
        self._client = client
        self._change_view = client.register_script(CHANGE_VALUE_LUA)  # the view's compare-and-set
        self._add_view = client.register_script(_ADD_VIEW)
        # ticket id -> (JSON, view) as this replica last wrote it: a guess, checked by the script.
        self._written: dict[str, tuple[str, TicketView]] = {}

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

    @staticmethod
    def _customer(key: str) -> str:
        return f"tm:agent_desk:customer:{natural_key_hash(key)}"

    @staticmethod
    def _offline_claim(agent_id: str) -> str:
        return f"tm:agent_desk:offline_claim:{agent_id}"

    @staticmethod
    def _token(token_hash: str) -> str:
        return f"tm:agent_desk:token:{token_hash}"

    @staticmethod
    def _tokens(agent_id: str) -> str:
        return f"tm:agent_desk:tokens:{agent_id}"

    _QUEUED = "tm:agent_desk:queued"
    _SLA_RISK = "tm:agent_desk:sla_risk"
    _DECISIONS = "tm:agent_desk:decisions"
    _PRESENT = "tm:agent_desk:present"
    _LAST_SEEN = "tm:agent_desk:last_seen"

    # tickets
    async def add_ticket(self, view: TicketView) -> bool:
        """Store a new ticket's view and index it under its customer; False if it is already
        there (a redelivery: the index entries are idempotent and written again)."""
        return (await self.add_ticket_after(None, view))[1]

    async def add_ticket_after(self, first: ScriptCall | None, view: TicketView) -> tuple[Any, bool]:
        """:meth:`add_ticket`, with ``first`` run just before it in the same round trip:
        (``first``'s result, added)."""
        value = view.model_dump_json()
        keys = [self._ticket(view.ticket_id), *(self._customer(k) for k in customer_keys(view.customer))]
        add = ScriptCall(self._add_view, keys, [value, str(VIEW_TTL_SECONDS), repr(view.received_at.timestamp()),
                                                view.ticket_id])
        results = await self._run([first, add] if first else [add])
        added = bool(results[-1])
        if added:
            self._remember(view.ticket_id, value, view)
        return (results[0] if first else None), added

    async def tickets(self, ticket_ids: list[str]) -> list[TicketView]:
        if not ticket_ids:
            return []
        raws = await self._client.mget([self._ticket(t) for t in ticket_ids])
        return [TicketView.model_validate_json(raw) for raw in raws if raw]

    async def customer_history(self, view: TicketView) -> list[TicketView]:
        """The customer's other tickets the desk knows, newest first (not the contacts that became
        messages on one of them)."""
        ids: dict[str, float] = {}
        for key in customer_keys(view.customer) + ([profile_key(view.customer_id)] if view.customer_id else []):
            for ticket_id, score in await self._client.zrevrange(self._customer(key), 0, HISTORY_TICKETS_SHOWN,
                                                                 withscores=True):
                ids[ticket_id] = score
        ids.pop(view.ticket_id, None)
        newest = sorted(ids, key=lambda t: ids[t], reverse=True)[:HISTORY_TICKETS_SHOWN]
        return [v for v in await self.tickets(newest) if not v.attached_to]

    async def queued(self) -> list[TicketView]:
        views = await self.tickets(await self._client.zrange(self._QUEUED, 0, BOARD_TICKETS_READ - 1))
        return [v for v in views if v.status == "queued"]

    async def at_risk(self) -> list[TicketView]:
        views = await self.tickets(await self._client.zrange(self._SLA_RISK, 0, BOARD_TICKETS_READ - 1))
        return [v for v in views if v.status != "resolved" and sla_state(v)]

    async def add_decision(self, ticket_id: str, record: DecisionRecord) -> None:
        """Keep the latest routing decisions across tickets (a redelivery is the same member)."""
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.zadd(self._DECISIONS, {_decision_member(ticket_id, record): record.at.timestamp()})
            pipe.zremrangebyrank(self._DECISIONS, 0, -RECENT_DECISIONS_KEPT - 1)
            await pipe.execute()

    def _decision(self, writes: _ViewWrites, ticket_id: str, record: DecisionRecord) -> None:
        """:meth:`add_decision` as writes that go with a view change."""
        writes.zadd(self._DECISIONS, {_decision_member(ticket_id, record): record.at.timestamp()})
        writes.zremrangebyrank(self._DECISIONS, 0, -RECENT_DECISIONS_KEPT - 1)

    async def recent_decisions(self, count: int = 50) -> list[dict[str, Any]]:
        return [json.loads(m) for m in await self._client.zrevrange(self._DECISIONS, 0, count - 1)]

    async def ticket(self, ticket_id: str) -> TicketView | None:
        raw = await self._client.get(self._ticket(ticket_id))
        return TicketView.model_validate_json(raw) if raw else None

    async def change_ticket(self, ticket_id: str, change: Callable[[TicketView], TicketView]) -> tuple[TicketView, TicketView]:
        """Apply ``change`` atomically; return (before, after). TicketNotStored if there is no view.

        ``change`` may raise (e.g. ActionRefused); nothing is written then.
        """
        _, before, after = await self.change_ticket_after(None, ticket_id, change)
        return before, after

    async def change_ticket_after(self, first: ScriptCall | None, ticket_id: str,
                                  change: Callable[[TicketView], TicketView], *,
                                  decision: DecisionRecord | None = None) -> tuple[Any, TicketView, TicketView]:
        """:meth:`change_ticket`, with ``first`` run once just before it in the same round trip
        (also when the view is missing or unchanged), and ``decision`` kept (:meth:`add_decision`)
        with the view: (``first``'s result, before, after)."""
        key = self._ticket(ticket_id)
        pending = [first] if first else []
        first_result = None
        known = self._written.get(ticket_id)
        fresh = False  # known was read from Redis by this call (not a guess)
        for _ in range(_MAX_CHANGE_RETRIES):
            if known is None:
                results = await self._run(pending, get=key)
                if pending:
                    first_result, pending = results[0], []
                raw = results[-1]
                if raw is None:
                    self._written.pop(ticket_id, None)
                    raise TicketNotStored(ticket_id)
                known, fresh = (raw, TicketView.model_validate_json(raw)), True
            raw, before = known
            try:
                after = change(before)
            except Exception:
                if fresh:
                    raise
                known = None  # decided on the stored view, not on a guess
                continue
            if after == before:
                if not fresh:
                    known = None  # "nothing to do" is only believed of the stored view
                    continue
                if decision is not None:
                    await self.add_decision(ticket_id, decision)
                return first_result, before, after
            writes = _ViewWrites()
            self._index(writes, before, after)
            if decision is not None:
                self._decision(writes, ticket_id, decision)
            value = after.model_dump_json()
            cas = ScriptCall(self._change_view, *change_value_call(key, raw, value, VIEW_TTL_SECONDS, writes))
            results = await self._run([*pending, cas])
            if pending:
                first_result, pending = results[0], []
            answer = results[-1]
            if answer[0] == 1:
                self._remember(ticket_id, value, after)
                return first_result, before, after
            if len(answer) < 2:
                self._written.pop(ticket_id, None)
                raise TicketNotStored(ticket_id)
            # someone changed it meanwhile (or the guess was old): apply again on what is stored
            known, fresh = (answer[1], TicketView.model_validate_json(answer[1])), True
        raise TransientError(f"ticket {ticket_id} kept changing under us")

    def _remember(self, ticket_id: str, value: str, view: TicketView) -> None:
        self._written.pop(ticket_id, None)
        self._written[ticket_id] = (value, view)
        if len(self._written) > VIEWS_REMEMBERED:
            del self._written[next(iter(self._written))]  # the least recently written

    async def _run(self, calls: list[ScriptCall], *, get: str | None = None) -> list[Any]:
        """The scripts, then GET ``get``, in one round trip; a script Redis lost (restart, flush)
        is loaded and run again. Raises the first error any of them met."""
        async with self._client.pipeline(transaction=False) as pipe:
            for call in calls:
                pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
            if get is not None:
                pipe.get(get)
            results = await pipe.execute(raise_on_error=False)
        lost = [i for i, r in enumerate(results[:len(calls)]) if isinstance(r, NoScriptError)]
        for i in lost:  # a script Redis did not know did not run: run it now (the others are done)
            await self._client.script_load(calls[i].script.script)
            results[i] = await self._client.evalsha(calls[i].script.sha, len(calls[i].keys), *calls[i].keys,
                                                    *calls[i].args)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    def _index(self, pipe: Writes, before: TicketView, after: TicketView) -> None:
        """Keep the indexes in step with the views: an agent's unresolved tickets, the tickets
        waiting for an agent, the unresolved tickets with an SLA at risk."""
        if after.customer_id and after.customer_id != before.customer_id:
            key = self._customer(profile_key(after.customer_id))
            pipe.zadd(key, {after.ticket_id: after.received_at.timestamp()})
            pipe.expire(key, VIEW_TTL_SECONDS)
        if after.status == "queued":
            pipe.zadd(self._QUEUED, {after.ticket_id: (after.queued_at or after.received_at).timestamp()})
        else:
            pipe.zrem(self._QUEUED, after.ticket_id)
        if after.status != "resolved" and sla_state(after):
            due = min(c.due_at for c in after.sla.values())
            pipe.zadd(self._SLA_RISK, {after.ticket_id: due.timestamp()})
        else:
            pipe.zrem(self._SLA_RISK, after.ticket_id)
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

    async def worklists(self, agent_ids: list[str]) -> dict[str, list[TicketView]]:
        """Every listed agent's open tickets (the supervisor's load board)."""
        async with self._client.pipeline(transaction=False) as pipe:
            for agent_id in agent_ids:
                pipe.zrange(self._worklist(agent_id), 0, -1)
            id_lists = await pipe.execute()
        views = {v.ticket_id: v for v in await self.tickets([t for ids in id_lists for t in ids])}
        return {agent_id: [views[t] for t in ids if t in views and views[t].agent_id == agent_id
                           and views[t].status != "resolved"]
                for agent_id, ids in zip(agent_ids, id_lists)}

    # presence
    async def presence(self, agent_id: str) -> str:
        return await self._client.get(self._presence(agent_id)) or "offline"

    async def presences(self, agent_ids: list[str]) -> dict[str, str]:
        if not agent_ids:
            return {}
        values = await self._client.mget([self._presence(a) for a in agent_ids])
        return {a: v or "offline" for a, v in zip(agent_ids, values)}

    async def set_presence(self, agent_id: str, presence: str, now: datetime) -> str:
        """Set and return the previous presence. Going online/away counts as being seen, so
        an agent who never opens a console is swept offline after the grace period too."""
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.set(self._presence(agent_id), presence, ex=PRESENCE_TTL_SECONDS, get=True)
            if presence == "offline":
                pipe.srem(self._PRESENT, agent_id)
            else:
                pipe.sadd(self._PRESENT, agent_id)
                pipe.zadd(self._LAST_SEEN, {agent_id: now.timestamp()})
            pipe.delete(self._offline_claim(agent_id))
            previous = (await pipe.execute())[0]
        return previous or "offline"

    async def seen(self, agent_ids: set[str], now: datetime) -> None:
        """These agents have a live console socket on this replica."""
        if agent_ids:
            await self._client.zadd(self._LAST_SEEN, {a: now.timestamp() for a in agent_ids})

    async def lost_agents(self, cutoff: datetime) -> list[str]:
        """Agents not offline and not seen since ``cutoff`` (candidates; claim before acting)."""
        stale = await self._client.zrangebyscore(self._LAST_SEEN, "-inf", cutoff.timestamp())
        if not stale:
            return []
        present = await self._client.smismember(self._PRESENT, stale)
        return [a for a, here in zip(stale, present) if here]

    async def claim_offline(self, agent_id: str, cutoff: datetime, replica_id: str) -> float | None:
        """The last-seen time if this replica won the right to announce the agent offline."""
        seen = await self._client.eval(_CLAIM_OFFLINE, 3, self._LAST_SEEN, self._presence(agent_id),
                                       self._offline_claim(agent_id), agent_id, cutoff.timestamp(), replica_id,
                                       OFFLINE_CLAIM_TTL_SECONDS)
        return float(seen) if seen else None

    async def release_offline_claim(self, agent_id: str) -> None:
        await self._client.delete(self._offline_claim(agent_id))

    # API tokens (only their SHA-256 is stored: a token is 256 random bits, so a fast hash is enough)
    async def add_token(self, agent_id: str, token_id: str, token_hash: str, label: str, created_at: datetime,
                        ttl_seconds: int) -> None:
        meta = json.dumps({"token_id": token_id, "label": label, "created_at": created_at.isoformat(),
                           "expires_at": created_at.timestamp() + ttl_seconds, "hash": token_hash})
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.set(self._token(token_hash), agent_id, ex=ttl_seconds)
            pipe.hset(self._tokens(agent_id), token_id, meta)
            pipe.expire(self._tokens(agent_id), ttl_seconds, gt=True)
            pipe.expire(self._tokens(agent_id), ttl_seconds, nx=True)
            await pipe.execute()

    async def token_agent(self, token_hash: str) -> str | None:
        return await self._client.get(self._token(token_hash))

    async def tokens(self, agent_id: str, now: datetime) -> list[dict[str, Any]]:
        metas = [json.loads(m) for m in (await self._client.hgetall(self._tokens(agent_id))).values()]
        return sorted(({k: v for k, v in m.items() if k != "hash"} for m in metas if m["expires_at"] > now.timestamp()),
                      key=lambda m: m["created_at"])

    async def revoke_token(self, agent_id: str, token_id: str) -> bool:
        raw = await self._client.hget(self._tokens(agent_id), token_id)
        if raw is None:
            return False
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.delete(self._token(json.loads(raw)["hash"]))
            pipe.hdel(self._tokens(agent_id), token_id)
            await pipe.execute()
        return True

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
