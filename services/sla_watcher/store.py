"""The SLA watcher's Redis state (keys ``tm:sla_watcher:*``), with domain verbs.

Keys (this class is their only owner):

- ``due`` zset: one member ``<ticket>:<clock>`` per running clock, scored by its next unfired
  item's due time (epoch seconds, a float: sub-second precision at any number of clocks). A
  sweep reads only the head, so its cost does not grow with the number of open clocks;
- ``clock:<ticket>:<clock>`` hash: the clock (see clocks.py): cycle, state, policy, calendar,
  target, plan (a digest into ``plans``), segments, since, fired, config generation, ``rev``
  (bumped by every write), ``lease`` (a sweep holds it); ``CLOCK_TTL_SECONDS`` after the last
  write. A clock finished before it started is a tombstone (no plan), so a late start does nothing;
- ``plans`` hash: plan digest → plan JSON (a few policies, so a few plans, shared by all clocks);
- ``open`` set: ``<ticket>:<clock>`` of every running or paused clock (what a recompute walks;
  between walks a slow walk, cursor ``open:tidy_cursor``, drops members whose clock expired);
- ``ticket:<ticket>`` hash: what the clocks need of the ticket: classification facts (policy
  selection), assignee, whether an agent replied, the pause flag and the time it was set
  (the latest event wins, whatever order events arrive in), resolution time and window,
  customer key (and ``customer_ref``, its hash below) and linked ticket (second contact);
  ``CLOCK_TTL_SECONDS`` after the last write;
- ``customer:<sha256>`` hash: a customer's last resolved ticket (second contact), same TTL;
- ``config:gen``, ``config:gens``: config generations (the newest loaded wins, see service.py);
  ``recompute``: the walk that carries open clocks to a new generation (owner, lease, cursor).

Writes are compare-and-set on ``rev`` (a handler reads, decides in Python with the calendar,
writes; a conflict means read again). A sweep *claims* due members in one script: re-scored to a
lease deadline and marked on the clock, so no other replica sees them; a handler writing a
leased clock leaves its due score to the claim holder, whose commit re-schedules from the
clock as it then is. A replica that dies mid-batch leaves its members to come due again when
the lease runs out: at least once, never lost, and the events carry stable ids.
"""
from __future__ import annotations

import hashlib
import json
import math
import uuid
from dataclasses import dataclass, replace
from typing import Iterable

import redis

from services.sla_watcher.clocks import Clock, PlanItem, plan_digest, plan_from_json, plan_json

PREFIX = "tm:sla_watcher:"
# A clock is kept this long after its last write, and after its breach time if that is later
# (nothing bounds a target: 30 business days are 6 weeks of wall time); a finished clock is
# kept for redeliveries. Its ticket's record lives at least as long.
CLOCK_TTL_SECONDS = 35 * 24 * 3600
CLAIM_LEASE_SECONDS = 30.0  # far above the time to publish one batch
RECOMPUTE_LEASE_SECONDS = 30.0

# KEYS: clock, due, open, ticket   ARGV: expected rev, member, score ('' = not scheduled), open ('1'/'0'),
# ttl, now, field, value, ...   Returns the new rev, or -1 when the clock changed since it was read.
_PUT_CLOCK = """
local rev = tonumber(redis.call('HGET', KEYS[1], 'rev') or '0')
if rev ~= tonumber(ARGV[1]) then return -1 end
for i = 7, #ARGV - 1, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
rev = rev + 1
redis.call('HSET', KEYS[1], 'rev', rev)
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[2], ARGV[2])
elseif tonumber(redis.call('HGET', KEYS[1], 'lease') or '0') <= tonumber(ARGV[6]) then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
end  -- leased: the sweep holding it schedules it again from this state when it commits
if ARGV[4] == '1' then redis.call('SADD', KEYS[3], ARGV[2]) else redis.call('SREM', KEYS[3], ARGV[2]) end
redis.call('EXPIRE', KEYS[1], ARGV[5])
if redis.call('TTL', KEYS[4]) < tonumber(ARGV[5]) then redis.call('EXPIRE', KEYS[4], ARGV[5]) end
return rev
"""

# KEYS: due, open, then per clock: clock, ticket   ARGV: now, then per clock: expected rev, member,
# score ('' = not scheduled), open ('1'/'0'), ttl, number of fields, field, value, ...
# _PUT_CLOCK for several clocks in one round trip, each its own compare-and-set: returns each
# one's new rev, or -1 for a clock that changed since it was read (only that one is not written).
_PUT_CLOCKS = """
local now = tonumber(ARGV[1])
local out = {}
local a = 2
for k = 3, #KEYS, 2 do
  local clock, ticket = KEYS[k], KEYS[k + 1]
  local first, last = a + 6, a + 5 + 2 * tonumber(ARGV[a + 5])
  local rev = tonumber(redis.call('HGET', clock, 'rev') or '0')
  if rev ~= tonumber(ARGV[a]) then
    out[#out + 1] = -1
  else
    rev = rev + 1
    redis.call('HSET', clock, 'rev', rev, unpack(ARGV, first, last))
    local mem, score = ARGV[a + 1], ARGV[a + 2]
    if score == '' then
      redis.call('ZREM', KEYS[1], mem)
    elseif tonumber(redis.call('HGET', clock, 'lease') or '0') <= now then
      redis.call('ZADD', KEYS[1], score, mem)
    end  -- leased: the sweep holding it schedules it again from this state when it commits
    if ARGV[a + 3] == '1' then redis.call('SADD', KEYS[2], mem) else redis.call('SREM', KEYS[2], mem) end
    redis.call('EXPIRE', clock, ARGV[a + 4])
    if redis.call('TTL', ticket) < tonumber(ARGV[a + 4]) then redis.call('EXPIRE', ticket, ARGV[a + 4]) end
    out[#out + 1] = rev
  end
  a = last + 1
end
return out
"""

# KEYS: due   ARGV: now, lease_until, limit, owner, lease_now
# Returns member, due, ... (earliest first); each is re-scored to the lease and its clock marked
# with the lease and its owner. A member whose clock another sweep still holds (its lease not run
# out by ``lease_now``: the lease is measured on the clock that measures elapsed time, whatever
# ``now`` a catch-up sweeps up to) is left to it.
_CLAIM_DUE = """
local items = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for i = 1, #items, 2 do
  local key = '""" + PREFIX + """clock:' .. items[i]
  local held = tonumber(redis.call('HGET', key, 'lease') or '0')
  if held <= tonumber(ARGV[5]) then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[2], items[i])
    if redis.call('EXISTS', key) == 1 then redis.call('HSET', key, 'lease', ARGV[2], 'lease_owner', ARGV[4]) end
    out[#out + 1] = items[i]
    out[#out + 1] = items[i + 1]
  end
end
return out
"""

# KEYS: clock, due   ARGV: member, owner, lease_until, fired kinds (space-separated)
# 1 when ``owner`` still holds the lease (now extended, and what it fired so far recorded, so a
# sweep that takes over after a stall does not fire it again), 0 when another sweep took it
# over (or the clock is gone).
_EXTEND = """
if redis.call('HGET', KEYS[1], 'lease_owner') ~= ARGV[2] then return 0 end
local fired = redis.call('HGET', KEYS[1], 'fired') or ''
for kind in string.gmatch(ARGV[4], '%S+') do
  if not string.find(' ' .. fired .. ' ', ' ' .. kind .. ' ', 1, true) then
    if fired == '' then fired = kind else fired = fired .. ' ' .. kind end
  end
end
redis.call('HSET', KEYS[1], 'lease', ARGV[3], 'fired', fired)
redis.call('ZADD', KEYS[2], 'XX', ARGV[3], ARGV[1])
return 1
"""

# KEYS: clock, due   ARGV: member, owner, due ('' = none)   Gives back a claim ``owner`` still holds.
_RELEASE = """
if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('HGET', KEYS[1], 'lease_owner') ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], 'lease', 'lease_owner')
if ARGV[3] == '' or redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
end
return 1
"""

# KEYS: clock, due   ARGV: rev read, member, fired kinds (space-separated), next due ('' = none), now,
# owner ('' = whoever holds it), ttl
# What fired is recorded whatever happened meanwhile (those events are out). A lease another
# sweep took over stays with it (3): its holder schedules the clock. Unchanged since the read:
# the next due is set. Changed (a handler wrote it): a running clock is evaluated again at
# once, from its new state.
_COMMIT = """
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('ZREM', KEYS[2], ARGV[2]) return 0 end
local fired = redis.call('HGET', KEYS[1], 'fired') or ''
for kind in string.gmatch(ARGV[3], '%S+') do
  if not string.find(' ' .. fired .. ' ', ' ' .. kind .. ' ', 1, true) then
    if fired == '' then fired = kind else fired = fired .. ' ' .. kind end
  end
end
redis.call('HSET', KEYS[1], 'fired', fired)
redis.call('EXPIRE', KEYS[1], ARGV[7])
local rev = tonumber(redis.call('HGET', KEYS[1], 'rev') or '0')
if ARGV[6] ~= '' and redis.call('HGET', KEYS[1], 'lease_owner') ~= ARGV[6] then
  redis.call('HSET', KEYS[1], 'rev', rev + 1)
  return 3
end
redis.call('HDEL', KEYS[1], 'lease', 'lease_owner')
local rev = tonumber(redis.call('HGET', KEYS[1], 'rev') or '0')
redis.call('HSET', KEYS[1], 'rev', rev + 1)
if rev == tonumber(ARGV[1]) then
  if ARGV[4] == '' then redis.call('ZREM', KEYS[2], ARGV[2]) else redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2]) end
  return 1
end
if redis.call('HGET', KEYS[1], 'state') == 'running' then
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[2])
else
  redis.call('ZREM', KEYS[2], ARGV[2])
end
return 2
"""

# KEYS: ticket, clock, ...   ARGV: ttl, flag field, field, value, ...
# Returns {complete, the ticket's fields, each clock's fields, the linked ticket's fields, the
# customer's fields} (flat field/value lists): complete is 1 exactly once, for the write that
# completes both halves (received + classified), and only then are the last two read (what the
# second-contact check needs; the customer's only when the ticket names its hash). The ticket
# and clocks come back with the write so the handler reads nothing more before deciding.
_NOTE_TICKET = """
redis.call('HSET', KEYS[1], ARGV[2], '1', unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[1])
local complete = 0
if redis.call('HEXISTS', KEYS[1], 'received_seen') == 1 and redis.call('HEXISTS', KEYS[1], 'classified_seen') == 1 then
  complete = redis.call('HSETNX', KEYS[1], 'contact_checked', '1')
end
local out = {complete}
for i = 1, #KEYS do out[#out + 1] = redis.call('HGETALL', KEYS[i]) end
local linked, customer = {}, {}
if complete == 1 then
  local id = redis.call('HGET', KEYS[1], 'linked_ticket_id') or ''
  if id ~= '' then linked = redis.call('HGETALL', '""" + PREFIX + """ticket:' .. id) end
  local ref = redis.call('HGET', KEYS[1], 'customer_ref') or ''
  if ref ~= '' then customer = redis.call('HGETALL', '""" + PREFIX + """customer:' .. ref) end
end
out[#out + 1] = linked
out[#out + 1] = customer
return out
"""

# KEYS: ticket   ARGV: paused ('1'/'0'), at, ttl   Returns the pause flag in force.
_SET_PAUSED = """
local at = tonumber(redis.call('HGET', KEYS[1], 'paused_at') or '-1')
if tonumber(ARGV[2]) >= at then
  redis.call('HSET', KEYS[1], 'paused', ARGV[1], 'paused_at', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return redis.call('HGET', KEYS[1], 'paused')
"""

# KEYS: ticket   ARGV: field, epoch, ttl   Keeps the latest time (events may arrive out of order).
_RAISE_TIME = """
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
if tonumber(ARGV[2]) > old then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return redis.call('HGET', KEYS[1], ARGV[1])
"""

# KEYS: ticket   ARGV: agent_id, at, attempt, ttl
# Only a newer assignment (by occurred_at, then attempt) names the assignee: events may cross.
_SET_AGENT = """
local at = tonumber(redis.call('HGET', KEYS[1], 'agent_at') or '-1')
local attempt = tonumber(redis.call('HGET', KEYS[1], 'agent_attempt') or '0')
local new_at, new_attempt = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
if new_at < at or (new_at == at and new_attempt < attempt) then return 0 end
redis.call('HSET', KEYS[1], 'agent_id', ARGV[1], 'agent_at', ARGV[2], 'agent_attempt', ARGV[3])
return 1
"""

# KEYS: ticket   ARGV: agent_id, at
# An unassignment older than the assignment on record (the same agent assigned again) changes nothing.
_CLEAR_AGENT = """
if redis.call('HGET', KEYS[1], 'agent_id') ~= ARGV[1] then return 0 end
if tonumber(redis.call('HGET', KEYS[1], 'agent_at') or '-1') > tonumber(ARGV[2]) then return 0 end
return redis.call('HDEL', KEYS[1], 'agent_id')
"""

# KEYS: ticket   ARGV: at, ttl   The ticket is open again as of ``at`` (the latest reopen is kept:
# a resolution older than it is a redelivery and changes nothing).
_SET_REOPENED = """
redis.call('HDEL', KEYS[1], 'resolved_at', 'pending_reopen_at', 'pending_reopen_id')
local old = tonumber(redis.call('HGET', KEYS[1], 'reopened_at') or '-1')
if tonumber(ARGV[1]) > old then redis.call('HSET', KEYS[1], 'reopened_at', ARGV[1]) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
"""

# KEYS: ticket   ARGV: at, event id, ttl   A reopen handled before its resolution waits on the
# ticket for it (the latest one wins).
_NOTE_PENDING_REOPEN = """
local old = tonumber(redis.call('HGET', KEYS[1], 'pending_reopen_at') or '-1')
if tonumber(ARGV[1]) > old then
  redis.call('HSET', KEYS[1], 'pending_reopen_at', ARGV[1], 'pending_reopen_id', ARGV[2])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
"""

# KEYS: due   ARGV: now, limit   Brings up to ``limit`` members scheduled after ``now`` forward to
# ``now``, earliest first (a new config may have moved their items earlier: the sweep recomputes
# each when it comes up and schedules it at its new due time). The number moved.
_RESCORE_DUE = """
local items = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'LIMIT', 0, tonumber(ARGV[2]))
for i = 1, #items do redis.call('ZADD', KEYS[1], 'XX', ARGV[1], items[i]) end
return #items
"""

# KEYS: open, tidy cursor   ARGV: count
# One page of the tidy walk (see the module docstring) in one round trip: the members from the
# stored cursor whose clock expired leave the open set, the cursor moves on. The number dropped.
_TIDY_OPEN = """
local page = redis.call('SSCAN', KEYS[1], redis.call('GET', KEYS[2]) or '0', 'COUNT', ARGV[1])
local gone = 0
for _, m in ipairs(page[2]) do
  if redis.call('EXISTS', '""" + PREFIX + """clock:' .. m) == 0 then
    redis.call('SREM', KEYS[1], m)
    gone = gone + 1
  end
end
redis.call('SET', KEYS[2], page[1])
return gone
"""

# KEYS: gen counter, gens hash   ARGV: digest
# A digest that is already the newest keeps its generation; any other (new, or an older file
# put back) becomes the newest: the last config loaded anywhere wins.
_REGISTER_CONFIG = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local mine = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '-1')
if mine == current then return current end
current = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], ARGV[1], current)
return current
"""

# KEYS: recompute   ARGV: gen, owner, now, lease_until
# 1 when the caller now holds the walk for ``gen`` (fresh or taken over after its lease ran out).
_TAKE_RECOMPUTE = """
local gen = tonumber(redis.call('HGET', KEYS[1], 'gen') or '-1')
local wanted = tonumber(ARGV[1])
if gen > wanted then return 0 end
if gen < wanted then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'gen', ARGV[1], 'cursor', '0', 'owner', ARGV[2], 'until', ARGV[4])
  return 1
end
if redis.call('HGET', KEYS[1], 'done') == '1' then return 0 end
if redis.call('HGET', KEYS[1], 'owner') == ARGV[2] or tonumber(redis.call('HGET', KEYS[1], 'until') or '0') < tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'until', ARGV[4])
  return 1
end
return 0
"""


@dataclass(frozen=True)
class TicketRecord:
    ticket_id: str
    trace_id: str = ""
    channel: str | None = None
    priority: str | None = None
    customer_tier: str = "standard"
    category: str | None = None
    received_at: float | None = None
    agent_id: str | None = None
    last_reply_at: float | None = None  # the latest agent reply: customer messages before it are answered
    paused: bool = False
    paused_at: float | None = None   # when the pause flag in force was set
    resolved_at: float | None = None
    reopened_at: float | None = None  # the latest reopen: an older resolution is a redelivery
    pending_reopen_at: float | None = None  # a reopen handled before its resolution, and its event id
    pending_reopen_id: str | None = None
    customer: str | None = None
    linked_ticket_id: str | None = None

    @property
    def classified(self) -> bool:
        return self.priority is not None and self.channel is not None


@dataclass(frozen=True)
class Noted:
    """What a ticket note returns: whether it completed the ticket, and the state it left. On
    completion also what the second-contact check reads: the linked ticket's record, and the
    customer's last resolution when ``customer_known`` (a record from before ``customer_ref``
    names none: the check reads it itself)."""
    complete: bool
    ticket: TicketRecord
    clocks: list[Clock | None]
    linked: TicketRecord | None = None
    last_resolution: tuple[str, float] | None = None
    customer_known: bool = False


@dataclass(frozen=True)
class Claimed:
    member: str
    due_at: float
    owner: str = ""  # the claiming sweep's token: commit, release and extend check it

    @property
    def key(self) -> tuple[str, str]:
        return split_member(self.member)


def member(ticket_id: str, clock: str) -> str:
    return f"{ticket_id}:{clock}"


def split_member(value: str) -> tuple[str, str]:
    """``"TM:odd:1:first_response"`` → ``("TM:odd:1", "first_response")``."""
    ticket_id, clock = value.rsplit(":", 1)
    return ticket_id, clock


def clock_ttl(clock: Clock, now: float) -> int:
    """Seconds to keep ``clock``: CLOCK_TTL_SECONDS past its last write, or past its breach."""
    until_breach = clock.breach_at - now if clock.breach_at is not None and clock.is_open else 0.0
    return CLOCK_TTL_SECONDS + max(0, math.ceil(until_breach))


def customer_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class SlaStore:
    due_key = PREFIX + "due"
    open_key = PREFIX + "open"
    plans_key = PREFIX + "plans"
    gen_key = PREFIX + "config:gen"
    gens_key = PREFIX + "config:gens"
    recompute_key = PREFIX + "recompute"
    tidy_key = PREFIX + "open:tidy_cursor"

    def __init__(self, client: redis.Redis):
        self.client = client
        self._put = client.register_script(_PUT_CLOCK)  # bench.sla_sweep seeds clocks with it
        self._put_clocks = client.register_script(_PUT_CLOCKS)
        self._claim_due = client.register_script(_CLAIM_DUE)
        self._commit = client.register_script(_COMMIT)
        self._extend = client.register_script(_EXTEND)
        self._release = client.register_script(_RELEASE)
        self._note = client.register_script(_NOTE_TICKET)
        self._set_paused = client.register_script(_SET_PAUSED)
        self._set_agent = client.register_script(_SET_AGENT)
        self._clear_agent = client.register_script(_CLEAR_AGENT)
        self._set_reopened = client.register_script(_SET_REOPENED)
        self._note_pending_reopen = client.register_script(_NOTE_PENDING_REOPEN)
        self._raise_time = client.register_script(_RAISE_TIME)
        self._register = client.register_script(_REGISTER_CONFIG)
        self._take_recompute = client.register_script(_TAKE_RECOMPUTE)
        self._rescore_due = client.register_script(_RESCORE_DUE)
        self._tidy_open = client.register_script(_TIDY_OPEN)
        self._plans: dict[str, tuple[PlanItem, ...]] = {}  # content-addressed: never stale
        # A plan's digest by the plan (a few policies: a few plans); a JSON dump and a sha256
        # per write otherwise.
        self._digests: dict[tuple[PlanItem, ...], str] = {}

    @staticmethod
    def clock_key(ticket_id: str, clock: str) -> str:
        return f"{PREFIX}clock:{ticket_id}:{clock}"

    @staticmethod
    def ticket_key(ticket_id: str) -> str:
        return f"{PREFIX}ticket:{ticket_id}"

    @staticmethod
    def customer_key(key: str) -> str:
        return f"{PREFIX}customer:{customer_hash(key)}"

    # -- clocks -------------------------------------------------------------------------

    def clock(self, ticket_id: str, name: str) -> Clock | None:
        return self._parse_clock(ticket_id, name, self.client.hgetall(self.clock_key(ticket_id, name)))

    def clocks(self, keys: list[tuple[str, str]]) -> list[Clock | None]:
        pipe = self.client.pipeline(transaction=False)
        for ticket_id, name in keys:
            pipe.hgetall(self.clock_key(ticket_id, name))
        return [self._parse_clock(t, n, fields) for (t, n), fields in zip(keys, pipe.execute())]

    def put_clock(self, clock: Clock, *, due: float | None, now: float) -> int | None:
        """Write ``clock`` if nobody wrote it since it was read (``clock.rev``); schedule its next
        item at ``due`` (None: nothing to fire). The new rev, or None on a conflict."""
        return self.put_clocks([(clock, due)], now=now)[0]

    def put_clocks(self, clocks: list[tuple[Clock, float | None]], *, now: float) -> list[int | None]:
        """put_clock for each (clock, due) in one round trip; each is its own compare-and-set
        (a conflict on one leaves the others written): the new revs, None where it conflicted."""
        keys: list[str] = [self.due_key, self.open_key]
        args: list = [repr(now)]
        for clock, due in clocks:
            fields = self._clock_fields(clock)
            keys += [self.clock_key(clock.ticket_id, clock.name), self.ticket_key(clock.ticket_id)]
            args += [clock.rev, member(clock.ticket_id, clock.name), "" if due is None else repr(due),
                     "1" if clock.is_open else "0", clock_ttl(clock, now), len(fields)]
            for name, value in fields.items():
                args += [name, value]
        return [None if int(rev) < 0 else int(rev) for rev in self._put_clocks(keys=keys, args=args)]

    def _clock_fields(self, clock: Clock) -> dict:
        digest = ""
        if clock.plan:
            digest = self._digests.get(clock.plan, "")
            if not digest:
                digest = plan_digest(clock.plan)
                if digest not in self._plans:
                    self.client.hsetnx(self.plans_key, digest, plan_json(clock.plan))
                    self._plans[digest] = clock.plan
                if len(self._digests) < 10_000:  # bounded, whatever the policies
                    self._digests[clock.plan] = digest
        return {
            "cycle": clock.cycle, "state": clock.state, "policy": clock.policy, "calendar": clock.calendar,
            "target": repr(clock.target), "plan": digest,
            "segments": json.dumps(clock.segments, separators=(",", ":")),
            "since": "" if clock.since is None else repr(clock.since), "fired": " ".join(sorted(clock.fired)),
            "activated_at": repr(clock.activated_at),
            "finished_at": "" if clock.finished_at is None else repr(clock.finished_at), "gen": clock.config_gen,
            "used": repr(clock.used), "breach_at": "" if clock.breach_at is None else repr(clock.breach_at),
        }

    def ticket_and_clocks(self, ticket_id: str, names: list[str]) -> tuple[TicketRecord, list[Clock | None]]:
        """The ticket's record and its clocks ``names``, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.ticket_key(ticket_id))
        for name in names:
            pipe.hgetall(self.clock_key(ticket_id, name))
        ticket, *found = pipe.execute()
        return _ticket(ticket_id, ticket), [self._parse_clock(ticket_id, n, f) for n, f in zip(names, found)]

    def _plan(self, digest: str) -> tuple[PlanItem, ...]:
        if not digest:
            return ()
        plan = self._plans.get(digest)
        if plan is None:
            raw = self.client.hget(self.plans_key, digest)
            plan = plan_from_json(raw) if raw else ()
            self._plans[digest] = plan
        return plan

    def _parse_clock(self, ticket_id: str, name: str, fields: dict[str, str]) -> Clock | None:
        if "state" not in fields:
            return None
        since = fields.get("since")
        finished = fields.get("finished_at")
        return Clock(
            ticket_id=ticket_id, name=name, cycle=int(fields.get("cycle") or 0), state=fields["state"],
            policy=fields.get("policy", ""), calendar=fields.get("calendar") or "always",
            target=float(fields.get("target") or 0), plan=self._plan(fields.get("plan", "")),
            segments=tuple((float(a), float(b)) for a, b in json.loads(fields.get("segments") or "[]")),
            since=float(since) if since else None, fired=frozenset((fields.get("fired") or "").split()),
            activated_at=float(fields.get("activated_at") or 0), finished_at=float(finished) if finished else None,
            config_gen=int(fields.get("gen") or 0), rev=int(fields.get("rev") or 0),
            used=float(fields.get("used") or 0), breach_at=_float(fields.get("breach_at")),
        )

    # -- the sweep ----------------------------------------------------------------------

    def claim_due(self, now: float, limit: int, lease: float = CLAIM_LEASE_SECONDS, *, owner: str | None = None,
                  lease_now: float | None = None) -> list[Claimed]:
        """Take up to ``limit`` clocks due by ``now``, earliest first, for this caller alone (its
        ``owner`` token, a fresh one by default) until ``lease_now + lease``."""
        owner = owner or uuid.uuid4().hex
        lease_now = now if lease_now is None else lease_now
        flat = self._claim_due(keys=[self.due_key], args=[repr(now), repr(lease_now + lease), limit, owner,
                                                          repr(lease_now)])
        return [Claimed(member=flat[i], due_at=float(flat[i + 1]), owner=owner) for i in range(0, len(flat), 2)]

    def extend(self, claimed: Claimed, now: float, fired: Iterable[str] = (),
               lease: float = CLAIM_LEASE_SECONDS) -> bool:
        """Keep the claim for another ``lease`` seconds and record ``fired``; False when it ran
        out and another sweep took it (that sweep fires what is left: this one must not)."""
        ticket_id, name = claimed.key
        return bool(self._extend(keys=[self.clock_key(ticket_id, name), self.due_key],
                                 args=[claimed.member, claimed.owner, repr(now + lease), " ".join(fired)]))

    def claimed_state(self, claimed: list[Claimed]) -> list[tuple[Clock | None, TicketRecord | None]]:
        """The claimed clocks and their tickets, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for item in claimed:
            ticket_id, name = item.key
            pipe.hgetall(self.clock_key(ticket_id, name))
            pipe.hgetall(self.ticket_key(ticket_id))
        raw = pipe.execute()
        out = []
        for index, item in enumerate(claimed):
            ticket_id, name = item.key
            out.append((self._parse_clock(ticket_id, name, raw[2 * index]),
                        _ticket(ticket_id, raw[2 * index + 1])))
        return out

    def commit(self, clock: Clock, fired: Iterable[str], next_due: float | None, now: float, *,
               owner: str = "") -> int:
        """After firing: record ``fired``, release the claim ``owner`` holds, schedule the next
        item (see _COMMIT; 3: the claim was taken over, its new holder schedules)."""
        return int(self._commit(keys=[self.clock_key(clock.ticket_id, clock.name), self.due_key],
                                args=[clock.rev, member(clock.ticket_id, clock.name), " ".join(fired),
                                      "" if next_due is None else repr(next_due), repr(now), owner,
                                      clock_ttl(clock, now)]))

    def release(self, claimed: Claimed, due: float | None) -> bool:
        """Give back a claimed member this round does not fire: due again at ``due`` (None, or
        no clock behind it any more: gone). False when another sweep took the claim over."""
        ticket_id, name = claimed.key
        return bool(self._release(keys=[self.clock_key(ticket_id, name), self.due_key],
                                  args=[claimed.member, claimed.owner, "" if due is None else repr(due)]))

    def next_due_time(self) -> float | None:
        head = self.client.zrange(self.due_key, 0, 0, withscores=True)
        return float(head[0][1]) if head else None

    def due_members(self) -> list[str]:
        return list(self.client.zrange(self.due_key, 0, -1))

    # -- tickets ------------------------------------------------------------------------

    def ticket(self, ticket_id: str) -> TicketRecord:
        return _ticket(ticket_id, self.client.hgetall(self.ticket_key(ticket_id)))

    def note_classified(self, ticket_id: str, *, trace_id: str, channel: str, priority: str, customer_tier: str,
                        category: str | None, received_at: float, clocks: tuple[str, ...] = ()) -> Noted:
        """Keep what policy selection needs; complete once both this and the intake's
        ticket_received are in (the second-contact check runs then, exactly once). The ticket
        and its ``clocks`` as they are after the write come back with it."""
        return self._note_ticket(ticket_id, "classified_seen", {
            "trace_id": trace_id, "channel": channel, "priority": priority, "customer_tier": customer_tier,
            "category": category or "", "received_at": repr(received_at)}, clocks)

    def note_received(self, ticket_id: str, *, trace_id: str, customer: str | None, linked_ticket_id: str | None,
                      received_at: float) -> Noted:
        return self._note_ticket(ticket_id, "received_seen", {
            "customer": customer or "", "linked_ticket_id": linked_ticket_id or "", "received_at": repr(received_at),
            "trace_id": trace_id,
            # The customer's hash key, which Lua cannot compute: the note completing the ticket
            # reads their last resolution in the same script.
            "customer_ref": customer_hash(customer) if customer else ""})

    def _note_ticket(self, ticket_id: str, flag: str, fields: dict[str, str], clocks: tuple[str, ...] = ()) -> Noted:
        args: list = [CLOCK_TTL_SECONDS, flag]
        for name, value in fields.items():
            args += [name, value]
        complete, raw_ticket, *found, linked, customer = self._note(
            keys=[self.ticket_key(ticket_id), *(self.clock_key(ticket_id, name) for name in clocks)], args=args)
        ticket = _ticket(ticket_id, fields := _pairs(raw_ticket))
        noted = Noted(bool(complete), ticket,
                      [self._parse_clock(ticket_id, name, _pairs(f)) for name, f in zip(clocks, found)])
        if not complete:
            return noted
        linked_id = ticket.linked_ticket_id
        return replace(noted, linked=_ticket(linked_id, _pairs(linked)) if linked_id else None,
                       last_resolution=_last_resolution(_pairs(customer)),
                       customer_known=bool(ticket.customer and fields.get("customer_ref")))

    def set_agent(self, ticket_id: str, agent_id: str, at: float, attempt: int = 1) -> bool:
        """``agent_id`` holds the ticket as of ``at`` (``attempt`` breaks a tie), unless a newer
        assignment is on record already (handled first: a retried delivery); True when recorded."""
        return bool(self._set_agent(keys=[self.ticket_key(ticket_id)],
                                    args=[agent_id, repr(at), attempt, CLOCK_TTL_SECONDS]))

    def clear_agent(self, ticket_id: str, agent_id: str, at: float) -> bool:
        """``agent_id`` no longer holds the ticket as of ``at``, unless a later assignment
        (handled first, events of two kinds may cross) already named someone, them included."""
        return bool(self._clear_agent(keys=[self.ticket_key(ticket_id)], args=[agent_id, repr(at)]))

    def note_reply(self, ticket_id: str, at: float) -> float:
        """An agent replied at ``at``; returns the latest reply time on record."""
        return float(self._raise_time(keys=[self.ticket_key(ticket_id)],
                                      args=["last_reply_at", repr(at), CLOCK_TTL_SECONDS]))

    def set_paused(self, ticket_id: str, paused: bool, at: float) -> bool:
        """Record the pause flag as of ``at`` (an older event than the one recorded changes
        nothing); returns the flag in force."""
        return self._set_paused(keys=[self.ticket_key(ticket_id)],
                                args=["1" if paused else "0", repr(at), CLOCK_TTL_SECONDS]) == "1"

    def set_resolved(self, ticket_id: str, at: float | None, customer: str | None) -> None:
        """``at`` None: open again. A resolution also becomes the customer's last one."""
        pipe = self.client.pipeline(transaction=True)
        key = self.ticket_key(ticket_id)
        if at is None:
            pipe.hdel(key, "resolved_at")
        else:
            pipe.hset(key, "resolved_at", repr(at))
            if customer:
                ckey = self.customer_key(customer)
                pipe.hset(ckey, mapping={"ticket_id": ticket_id, "resolved_at": repr(at)})
                pipe.expire(ckey, CLOCK_TTL_SECONDS)
        pipe.expire(key, CLOCK_TTL_SECONDS)
        pipe.execute()

    def set_reopened(self, ticket_id: str, at: float) -> None:
        """Open again as of ``at``: the resolution (and any reopen waiting for it) is forgotten."""
        self._set_reopened(keys=[self.ticket_key(ticket_id)], args=[repr(at), CLOCK_TTL_SECONDS])

    def note_pending_reopen(self, ticket_id: str, at: float, event_id: str) -> None:
        """A reopen arrived before the resolution it undoes: applied when that resolution arrives."""
        self._note_pending_reopen(keys=[self.ticket_key(ticket_id)], args=[repr(at), event_id, CLOCK_TTL_SECONDS])

    def last_resolution(self, customer: str) -> tuple[str, float] | None:
        return _last_resolution(self.client.hgetall(self.customer_key(customer)))

    # -- config generations and the recompute walk ---------------------------------------

    def register_config(self, digest: str) -> int:
        return int(self._register(keys=[self.gen_key, self.gens_key], args=[digest]))

    def gen_of(self, digest: str) -> int | None:
        gen = self.client.hget(self.gens_key, digest)
        return int(gen) if gen is not None else None

    def current_gen(self) -> int:
        return int(self.client.get(self.gen_key) or 0)

    def take_recompute(self, gen: int, owner: str, now: float, lease: float = RECOMPUTE_LEASE_SECONDS) -> bool:
        return bool(self._take_recompute(keys=[self.recompute_key], args=[gen, owner, repr(now), repr(now + lease)]))

    def recompute_cursor(self) -> int:
        return int(self.client.hget(self.recompute_key, "cursor") or 0)

    def recompute_progress(self, gen: int, owner: str, cursor: int, now: float,
                           lease: float = RECOMPUTE_LEASE_SECONDS) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.recompute_key, mapping={"cursor": cursor, "until": repr(now + lease), "owner": owner,
                                               "gen": gen, **({"done": "1"} if cursor == 0 else {})})
        pipe.execute()

    def rescore_due(self, gen: int, now: float, limit: int) -> bool:
        """One page of bringing every scheduled clock forward to ``now`` for generation ``gen``
        (see _RESCORE_DUE); True once none is left (recorded on the walk, once per generation)."""
        if self.client.hget(self.recompute_key, "rescored") == str(gen):
            return True
        moved = int(self._rescore_due(keys=[self.due_key], args=[repr(now), limit]))
        if moved < limit:
            self.client.hset(self.recompute_key, "rescored", str(gen))
            return True
        return False

    def recompute_done(self, gen: int) -> bool:
        return _walk_done(self.client.hgetall(self.recompute_key), gen)

    def walk_state(self, gen: int) -> tuple[int, bool]:
        """The newest config generation and whether the walk for ``gen`` is done, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.gen_key)
        pipe.hgetall(self.recompute_key)
        current, walk = pipe.execute()
        return int(current or 0), _walk_done(walk, gen)

    def open_page(self, cursor: int, count: int) -> tuple[int, list[tuple[str, str]]]:
        cursor, members = self.client.sscan(self.open_key, cursor, count=count)
        return int(cursor), [split_member(m) for m in members]

    def tidy_open(self, count: int) -> int:
        """One page of the slow walk that drops members whose clock expired; the number dropped."""
        return int(self._tidy_open(keys=[self.open_key, self.tidy_key], args=[count]))

    def forget_open(self, keys: list[tuple[str, str]]) -> None:
        """Clocks whose record expired (a clock paused for longer than its TTL) leave the open set."""
        if keys:
            self.client.srem(self.open_key, *(member(t, n) for t, n in keys))

    def open_count(self) -> int:
        return int(self.client.scard(self.open_key))


def _walk_done(fields: dict[str, str], gen: int) -> bool:
    return int(fields.get("gen") or -1) > gen or (int(fields.get("gen") or -1) == gen and fields.get("done") == "1")


def _last_resolution(fields: dict[str, str]) -> tuple[str, float] | None:
    if not fields.get("resolved_at"):
        return None
    return fields["ticket_id"], float(fields["resolved_at"])


def _pairs(flat: list[str]) -> dict[str, str]:
    """A Lua HGETALL (field, value, field, value, ...) as a dict."""
    return dict(zip(flat[::2], flat[1::2]))


def _float(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None


def _ticket(ticket_id: str, fields: dict[str, str]) -> TicketRecord:
    return TicketRecord(
        ticket_id=ticket_id, trace_id=fields.get("trace_id", ""), channel=fields.get("channel") or None,
        priority=fields.get("priority") or None, customer_tier=fields.get("customer_tier") or "standard",
        category=fields.get("category") or None, received_at=_float(fields.get("received_at")),
        agent_id=fields.get("agent_id") or None, last_reply_at=_float(fields.get("last_reply_at")),
        paused=fields.get("paused") == "1", paused_at=_float(fields.get("paused_at")),
        resolved_at=_float(fields.get("resolved_at")), reopened_at=_float(fields.get("reopened_at")),
        pending_reopen_at=_float(fields.get("pending_reopen_at")),
        pending_reopen_id=fields.get("pending_reopen_id") or None,
        customer=fields.get("customer") or None, linked_ticket_id=fields.get("linked_ticket_id") or None,
    )
