"""The customer pages' Redis keys (all ``tm:intake_chat:status:`` and ``tm:intake_chat:csat:``),
behind domain verbs. ``store.ChatStore`` owns the chat's keys; this class owns these.

- ``status:view:<ticket>`` – the customer's projection of the ticket (JSON of
  ``status_view.StatusView``). Changes are optimistic (apply a pure change to the view last
  seen, write in one script only if Redis still holds that view, else the script answers the
  current one and the change is applied again) and also PUBLISH the ticket id on the channel
  ``status:changed``, so every replica holding a live page of that ticket re-reads it after the
  write, never before (only while ``status:watched:<ticket>`` says a page is open, see below).
  The view last seen is kept in memory (``_Seen``): most events of a ticket reach the replica
  that wrote its view, which then changes it in one round trip instead of a GET and a write.
  The memory is only ever a guess, checked by the script;
  ``VIEW_TTL_SECONDS`` after its last change, ``RESOLVED_VIEW_TTL_SECONDS`` once resolved;
- ``status:watched:<ticket>`` – a live page of the ticket is open on some replica: set before
  the page's first read and refreshed while it stays open, gone ``WATCH_TTL_SECONDS`` after the
  last page left. Changes of a ticket nobody watches (nearly all) PUBLISH nothing, so no
  replica's listener is woken for them;
- ``status:reply:<ticket>:<client message id>`` – a reply typed on the status page: the
  ``message_received`` built for it and whether the broker confirmed it (a resend answers the
  same and publishes at most once);
- ``csat:<ticket>`` – the survey answer: the ``csat_submitted`` built for it and whether it was
  confirmed. Created with NX: one answer per ticket;
- ``status:outbox`` – sorted set of the two kinds above not confirmed yet, by creation time;
  a sweep publishes what a failed request left behind;
- ``status:limit:<what>:<key>`` – attempt counters of fixed windows (lookups per client
  address and per ticket number, replies per ticket).
"""
from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

import redis.asyncio

from shared.customer_links import CSAT_TTL_SECONDS, STATUS_TTL_SECONDS
from shared.errors import TransientError
from shared.intake_ledger import natural_key_hash

from services.intake_chat.status_view import StatusView

PREFIX = "tm:intake_chat:status:"
CSAT_PREFIX = "tm:intake_chat:csat:"
CHANGES_CHANNEL = f"{PREFIX}changed"
VIEW_TTL_SECONDS = STATUS_TTL_SECONDS  # a status link lives 90 days; an open ticket's view as long after its last change
RESOLVED_VIEW_TTL_SECONDS = CSAT_TTL_SECONDS + 5 * 86400  # outlives the survey link sent at resolution
REPLY_RECORD_TTL_SECONDS = 7 * 86400   # a page resends a reply for minutes, not days
CSAT_RECORD_TTL_SECONDS = 180 * 86400  # one answer per ticket, also across a reopen and a second resolution
_MAX_CHANGE_RETRIES = 20
WATCH_TTL_SECONDS = 90          # an open page refreshes its mark well within this (every 25 s)
SEEN_MAX_VIEWS = 4096           # views kept in memory per replica (the recently changed tickets) ...
SEEN_MAX_CHARS = 8_000_000      # ... and at most this much of their JSON (a view can hold 200 long messages)

# KEYS: view, watched mark; ARGV: sha1 of the view the change was computed from ('' for none),
# the new view, ttl, change channel, ticket id. Writes the new view if the view is still that
# one, and announces it if a page watches the ticket: {1}; else answers what is there ({0, view},
# or {0} when there is none), so the caller re-applies its change without another GET.
_SET_VIEW = """
local current = redis.call('GET', KEYS[1])
if redis.sha1hex(current or '') ~= ARGV[1] then
  if current then return {0, current} end
  return {0}
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return {1}
"""

# KEYS: record, outbox; ARGV: ttl, now, then field/value pairs. Creates the record unless it
# exists, and lists it as waiting for the broker's confirm. Returns 1 if created.
_CREATE_PENDING = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
redis.call('ZADD', KEYS[2], tonumber(ARGV[2]), KEYS[1])
return 1
"""

# KEYS: record, outbox. The broker confirmed it (a record that expired meanwhile is not recreated).
_MARK_PUBLISHED = """
redis.call('ZREM', KEYS[2], KEYS[1])
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'published', '1')
return 1
"""

# KEYS: counters; ARGV: (window seconds, limit) per key. Counts one attempt on every counter;
# returns the seconds until the first counter over its limit resets, or 0 when none is.
_COUNT_ATTEMPT = """
local wait = 0
for i, key in ipairs(KEYS) do
  local window, limit = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('EXPIRE', key, window) end
  if n > limit and wait == 0 then
    wait = redis.call('TTL', key)
    if wait < 1 then wait = 1 end
  end
end
return wait
"""


@dataclass(frozen=True)
class Pending:
    """An event we built and owe the broker: a status-page reply or a survey answer."""

    key: str
    event_type: str
    body: dict[str, Any]
    published: bool


@dataclass(frozen=True)
class Limit:
    """At most ``limit`` attempts per ``window_seconds`` for one counter."""

    what: str
    key: str
    limit: int
    window_seconds: int


class _Seen:
    """The views this replica last read or wrote, by ticket (least recently used dropped first)."""

    def __init__(self, max_views: int = SEEN_MAX_VIEWS, max_chars: int = SEEN_MAX_CHARS):
        self._views: OrderedDict[str, tuple[str, StatusView]] = OrderedDict()
        self._chars = 0
        self._max_views = max_views
        self._max_chars = max_chars

    def get(self, ticket_id: str) -> tuple[str, StatusView] | None:
        found = self._views.get(ticket_id)
        if found is not None:
            self._views.move_to_end(ticket_id)
        return found

    def put(self, ticket_id: str, raw: str | None, view: StatusView | None) -> None:
        self.drop(ticket_id)
        if raw is None or view is None or len(raw) > self._max_chars:
            return
        self._views[ticket_id] = (raw, view)
        self._chars += len(raw)
        while len(self._views) > self._max_views or self._chars > self._max_chars:
            _, (old, _) = self._views.popitem(last=False)
            self._chars -= len(old)

    def drop(self, ticket_id: str) -> None:
        old = self._views.pop(ticket_id, None)
        if old is not None:
            self._chars -= len(old[0])


class StatusStore:
    def __init__(self, client: redis.asyncio.Redis):
        self._client = client
        self._create_pending = client.register_script(_CREATE_PENDING)
        self._mark_published = client.register_script(_MARK_PUBLISHED)
        self._count_attempt = client.register_script(_COUNT_ATTEMPT)
        self._set_view = client.register_script(_SET_VIEW)
        self._seen = _Seen()

    @property
    def client(self) -> redis.asyncio.Redis:
        """For the live-update listener's pub/sub connection."""
        return self._client

    @staticmethod
    def _view(ticket_id: str) -> str:
        return f"{PREFIX}view:{ticket_id}"

    @staticmethod
    def _watched(ticket_id: str) -> str:
        return f"{PREFIX}watched:{ticket_id}"

    @staticmethod
    def reply_key(ticket_id: str, client_message_id: str) -> str:
        return f"{PREFIX}reply:{ticket_id}:{client_message_id}"

    @staticmethod
    def csat_key(ticket_id: str) -> str:
        return f"{CSAT_PREFIX}{ticket_id}"

    _OUTBOX = f"{PREFIX}outbox"

    # --- the projection ----------------------------------------------------------------------

    async def watch(self, ticket_id: str) -> None:
        """A live page of the ticket is open here: changes of its view are announced (call it
        before reading the view the page shows, and again within ``WATCH_TTL_SECONDS``)."""
        await self._client.set(self._watched(ticket_id), "1", ex=WATCH_TTL_SECONDS)

    async def view(self, ticket_id: str) -> StatusView | None:
        raw = await self._client.get(self._view(ticket_id))
        view = StatusView.model_validate_json(raw) if raw else None
        self._seen.put(ticket_id, raw, view)
        return view

    async def change(self, ticket_id: str, change: Callable[[StatusView | None], StatusView]) -> tuple[StatusView | None, StatusView]:
        """Apply ``change`` atomically (creating the view); return (before, after). A change
        that changes nothing writes nothing and tells no page.

        The change is first applied to the view this replica saw last (none seen: a new
        ticket, no view yet). A write is checked by the script against what Redis holds; a
        change that changes nothing is confirmed by reading Redis, as the memory may be stale."""
        key = self._view(ticket_id)
        seen = self._seen.get(ticket_id)
        raw, before = seen if seen is not None else (None, None)
        confirmed = False  # ``raw`` was just read from Redis
        for _ in range(_MAX_CHANGE_RETRIES):
            after = change(before)
            if after == before:
                if confirmed:
                    return before, after
                fresh = await self._client.get(key)
                if fresh == raw:  # the view seen is the one there: nothing to do
                    return before, after
                raw = fresh
            else:
                ttl = RESOLVED_VIEW_TTL_SECONDS if after.resolution else VIEW_TTL_SECONDS
                written = after.model_dump_json()
                seen_sha1 = hashlib.sha1((raw or "").encode()).hexdigest()
                answer = await self._set_view(keys=[key, self._watched(ticket_id)],
                                              args=[seen_sha1, written, ttl, CHANGES_CHANNEL, ticket_id])
                if answer[0]:
                    self._seen.put(ticket_id, written, after)
                    return before, after
                # another replica changed it meanwhile (or it expired): apply again to what is there
                raw = answer[1] if len(answer) > 1 else None
            before = StatusView.model_validate_json(raw) if raw else None
            confirmed = True
            self._seen.put(ticket_id, raw, before)
        self._seen.drop(ticket_id)
        raise TransientError(f"status view of {ticket_id} kept changing under us")

    # --- events owed to the broker -------------------------------------------------------------

    async def add_pending(self, key: str, event_type: str, body: dict[str, Any], *, ttl: int,
                          now: datetime) -> tuple[Pending, bool]:
        """Store the event unless ``key`` holds one already; return the stored one and whether
        it is this one (the first wins: a resend or a second survey answer gets the first back)."""
        fields = {"event_type": event_type, "body": json.dumps(body, ensure_ascii=False), "published": "0"}
        args: list[Any] = [ttl, now.timestamp()]
        for name, value in fields.items():
            args += [name, value]
        if await self._create_pending(keys=[key, self._OUTBOX], args=args):
            return Pending(key, event_type, body, published=False), True
        existing = await self.pending(key)
        if existing is None:  # expired between the two calls: vanishingly rare, and retried
            raise TransientError(f"{key} vanished while read")
        return existing, False

    async def pending(self, key: str) -> Pending | None:
        data = await self._client.hgetall(key)
        if not data or "body" not in data:
            return None
        return Pending(key, data["event_type"], json.loads(data["body"]), data.get("published") == "1")

    async def mark_published(self, key: str) -> None:
        await self._mark_published(keys=[key, self._OUTBOX])

    async def overdue_pending(self, older_than: datetime, limit: int = 100) -> list[str]:
        """Keys of records still unconfirmed that were created before ``older_than``."""
        return list(await self._client.zrangebyscore(self._OUTBOX, "-inf", older_than.timestamp(), start=0, num=limit))

    async def forget_pending(self, key: str) -> None:
        await self._client.zrem(self._OUTBOX, key)

    # --- rate limits ---------------------------------------------------------------------------

    async def count_attempt(self, *limits: Limit) -> int:
        """Count one attempt against every limit; 0, or the seconds to wait when one is spent."""
        keys = [f"{PREFIX}limit:{lim.what}:{natural_key_hash(lim.key)}" for lim in limits]
        args: list[Any] = []
        for lim in limits:
            args += [lim.window_seconds, lim.limit]
        return int(await self._count_attempt(keys=keys, args=args))
