"""Ticket event history and report facts in Redis (keys ``tm:history:*``; this class is their only owner).

Written by agent_desk's recorder, read by its report and history routes and by ``ticketmesh
report`` / ``ticketmesh trace``:

- ``tm:history:ids:<ticket>`` – SET of the event ids recorded for the ticket (a redelivered or
  re-published event is recorded once); lives as long as the ticket's records;
- ``tm:history:events:<ticket>`` – ZSET of compact JSON records (:func:`history.entry_of`) scored
  by ``occurred_at``; at most ``max_events`` (the oldest are dropped and counted in the facts'
  ``trimmed``); ``event_ttl`` after the ticket's last event;
- ``tm:history:facts:<ticket>`` – HASH of report facts (``<field>@`` holds the time a
  ``first``/``last`` value is from); ``fact_ttl`` after the ticket's last event;
- ``tm:history:day:<YYYY-MM-DD>`` – ZSET of the tickets received that UTC day, scored by
  ``received_at`` (a report reads only the days of its period); ``fact_ttl`` + 1 day after the
  day's last write;
- ``tm:history:open`` – ZSET of the tickets received and not resolved (reopened counts as open),
  scored by ``received_at``: the backlog. Pruned when read: tickets older than ``fact_ttl`` or
  whose facts expired;
- ``tm:history:trace:<trace id>`` – the ticket a trace id was stamped for (``fact_ttl``).

Recording one event is one Lua script (atomic): dedupe by event id, add the record, apply the
fact updates, index the day and the backlog, refresh the TTLs. Events recorded while a write is
in flight go together in the next pipeline (group commit): one round trip for many events under
load, and the same single round trip as before when events come one at a time. Each caller
still returns only once its own event is written (the consumer acks after that). An event that
also changes a ticket's view is recorded in the view change's round trip instead
(:meth:`HistoryStore.script_call`, the same script).
"""
from __future__ import annotations

import asyncio
import functools
import json
from datetime import datetime, timedelta, timezone

import redis.asyncio
from redis.exceptions import NoScriptError

from services.agent_desk.history import Entry
from services.agent_desk.store import ScriptCall

DAY_SECONDS = 24 * 3600
READ_CHUNK = 500                   # facts hashes read per pipeline
MAX_BATCH = 64                     # events written per pipeline at most (a consumer holds up to TM_PREFETCH)

# KEYS: ids, events, facts, open, day, trace
# ARGV: event_id, occurred_at, record, ticket_id, received_at|'', trace_id|'',
#       "event_ttl max_events fact_ttl day_ttl", updates as one JSON list of [op, field, value]
# (few arguments: packing each one costs the client more than decoding JSON costs Redis)
_RECORD = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
local at = tonumber(ARGV[2])
local event_ttl, max_events, fact_ttl, day_ttl = string.match(ARGV[7], '(%d+) (%d+) (%d+) (%d+)')
event_ttl, max_events, fact_ttl = tonumber(event_ttl), tonumber(max_events), tonumber(fact_ttl)
redis.call('EXPIRE', KEYS[1], event_ttl)
redis.call('ZADD', KEYS[2], at, ARGV[3])
local count = redis.call('ZCARD', KEYS[2])
if count > max_events then
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, count - max_events - 1)
  redis.call('HINCRBY', KEYS[3], 'trimmed', count - max_events)
end
redis.call('EXPIRE', KEYS[2], event_ttl)
for _, update in ipairs(cjson.decode(ARGV[8])) do
  local op, name, value = update[1], update[2], update[3]
  if op == 'incr' then
    redis.call('HINCRBY', KEYS[3], name, value)
  elseif op == 'last' or op == 'first' then
    local since = redis.call('HGET', KEYS[3], name .. '@')
    if not since or (op == 'last' and tonumber(since) <= at) or (op == 'first' and tonumber(since) > at) then
      redis.call('HSET', KEYS[3], name, value, name .. '@', ARGV[2])
    end
  else
    local current = redis.call('HGET', KEYS[3], name)
    if not current or (op == 'min' and tonumber(value) < tonumber(current))
        or (op == 'max' and tonumber(value) > tonumber(current)) then
      redis.call('HSET', KEYS[3], name, value)
    end
  end
end
local ticket = ARGV[4]
redis.call('HSET', KEYS[3], 'ticket_id', ticket)
redis.call('EXPIRE', KEYS[3], fact_ttl)
local received = redis.call('HGET', KEYS[3], 'received_at')
if ARGV[5] ~= '' and received then
  redis.call('ZADD', KEYS[5], received, ticket)
  redis.call('EXPIRE', KEYS[5], tonumber(day_ttl))
end
if received then
  local resolved = tonumber(redis.call('HGET', KEYS[3], 'resolved_at') or '')
  local reopened = tonumber(redis.call('HGET', KEYS[3], 'reopened_at') or '')
  if resolved and (not reopened or reopened <= resolved) then
    redis.call('ZREM', KEYS[4], ticket)
  else
    redis.call('ZADD', KEYS[4], received, ticket)
  end
end
if ARGV[6] ~= '' then redis.call('SET', KEYS[6], ticket, 'EX', fact_ttl) end
return 1
"""


def day_of(epoch: float) -> str:
    return _day_name(int(epoch // DAY_SECONDS))


@functools.lru_cache(maxsize=64)
def _day_name(day_number: int) -> str:
    # every recorded event names its day: strftime once per day, not once per event
    return datetime.fromtimestamp(day_number * DAY_SECONDS, timezone.utc).strftime("%Y-%m-%d")


class HistoryStore:
    """``event_ttl`` / ``fact_ttl``: seconds the records / the facts live after a ticket's last
    event; ``max_events``: records kept per ticket."""

    OPEN = "tm:history:open"

    def __init__(self, client: redis.asyncio.Redis, *, event_ttl: int, fact_ttl: int, max_events: int):
        self._client = client
        self.event_ttl = event_ttl
        self.fact_ttl = fact_ttl
        self.max_events = max_events
        self._record = client.register_script(_RECORD)
        self._pending: list[tuple[Entry, asyncio.Future[bool]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._lifetimes = f"{event_ttl} {max_events} {fact_ttl} {fact_ttl + DAY_SECONDS}"

    @staticmethod
    def _ids(ticket_id: str) -> str:
        return f"tm:history:ids:{ticket_id}"

    @staticmethod
    def _events(ticket_id: str) -> str:
        return f"tm:history:events:{ticket_id}"

    @staticmethod
    def _facts(ticket_id: str) -> str:
        return f"tm:history:facts:{ticket_id}"

    @staticmethod
    def _day(day: str) -> str:
        return f"tm:history:day:{day}"

    @staticmethod
    def _trace(trace_id: str) -> str:
        return f"tm:history:trace:{trace_id}"

    # -- writing ----------------------------------------------------------------------------

    def too_old(self, entry: Entry, now: datetime) -> bool:
        """An event older than the records live (a very late replay): its id may be forgotten
        already, so recording it could count it twice. It is left out."""
        return entry.occurred_at < now.timestamp() - self.event_ttl

    async def record(self, entry: Entry) -> bool:
        """Record one event; False when it was recorded before (same event id). Returns once
        written; raises what writing it raised."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((entry, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending())
        return await done

    def script_call(self, entry: Entry) -> ScriptCall:
        """Recording ``entry``, to run in another store's round trip; its result is what
        :meth:`record` returns (0: recorded before)."""
        keys, args = self._script_input(entry)
        return ScriptCall(self._record, keys, args)

    async def _write_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            results: list[object] | None = None
            try:
                results = await self._write([entry for entry, _ in batch])
            except Exception as exc:  # noqa: BLE001 - every caller of this batch gets it (Redis away: transient)
                results = [exc] * len(batch)
            finally:
                if results is None:  # cancelled mid-write (shutdown): the batch's callers must not wait forever
                    for _, done in batch:
                        done.cancel()
            for (_, done), result in zip(batch, results):
                if done.done():
                    continue  # its caller was cancelled
                if isinstance(result, Exception):
                    done.set_exception(result)
                else:
                    done.set_result(bool(result))

    async def _write(self, entries: list[Entry]) -> list[object]:
        if len(entries) == 1:  # the common case at low load: no pipeline around one command
            keys, args = self._script_input(entries[0])
            return [await self._record(keys=keys, args=args)]
        for attempt in (1, 2):
            async with self._client.pipeline(transaction=False) as pipe:
                for entry in entries:
                    keys, args = self._script_input(entry)
                    pipe.evalsha(self._record.sha, len(keys), *keys, *args)
                results = await pipe.execute(raise_on_error=False)
            if attempt == 1 and any(isinstance(r, NoScriptError) for r in results):
                await self._client.script_load(_RECORD)  # Redis restarted or its scripts were flushed
                continue
            return results
        raise AssertionError("unreachable")

    def _script_input(self, entry: Entry) -> tuple[list[str], list[str]]:
        received = entry.received_at
        args = [entry.event_id, repr(entry.occurred_at), entry.record, entry.ticket_id,
                "" if received is None else repr(received), entry.trace_id or "", self._lifetimes,
                json.dumps([(u.op, u.field, u.value) for u in entry.updates], separators=(",", ":"))]
        day = self._day(day_of(received)) if received is not None else self._day("none")
        keys = [self._ids(entry.ticket_id), self._events(entry.ticket_id), self._facts(entry.ticket_id), self.OPEN,
                day, self._trace(entry.trace_id or "none")]
        return keys, args

    # -- reading ----------------------------------------------------------------------------

    async def ticket(self, ticket_id: str) -> tuple[list[str], dict[str, str]]:
        """The ticket's records (oldest first) and facts; both empty when nothing is known."""
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.zrange(self._events(ticket_id), 0, -1)
            pipe.hgetall(self._facts(ticket_id))
            records, facts = await pipe.execute()
        return records, facts

    async def ticket_of_trace(self, trace_id: str) -> str | None:
        return await self._client.get(self._trace(trace_id))

    async def received_between(self, start: datetime, end: datetime) -> list[dict[str, str]]:
        """Facts of the tickets received in [start, end), read through the day index."""
        lo, hi = start.timestamp(), end.timestamp()
        days, day = [], start.astimezone(timezone.utc).date()
        while day <= (end - timedelta(microseconds=1)).astimezone(timezone.utc).date():
            days.append(day.isoformat())
            day += timedelta(days=1)
        async with self._client.pipeline(transaction=False) as pipe:
            for name in days:
                pipe.zrange(self._day(name), lo, f"({hi}", byscore=True)
            ids = [t for found in await pipe.execute() for t in found]
        return await self._facts_of(list(dict.fromkeys(ids)))

    async def open_tickets(self, now: datetime) -> list[dict[str, str]]:
        """Facts of the tickets open now (the backlog); forgets entries past their lifetime."""
        await self._client.zremrangebyscore(self.OPEN, "-inf", f"({now.timestamp() - self.fact_ttl}")
        ids = await self._client.zrange(self.OPEN, 0, -1)
        facts = await self._facts_of(ids)
        gone = sorted(set(ids) - {f["ticket_id"] for f in facts})
        if gone:
            await self._client.zrem(self.OPEN, *gone)
        return facts

    async def _facts_of(self, ticket_ids: list[str]) -> list[dict[str, str]]:
        found: list[dict[str, str]] = []
        for i in range(0, len(ticket_ids), READ_CHUNK):
            async with self._client.pipeline(transaction=False) as pipe:
                for ticket_id in ticket_ids[i:i + READ_CHUNK]:
                    pipe.hgetall(self._facts(ticket_id))
                found += [f for f in await pipe.execute() if f.get("ticket_id")]
        return found
