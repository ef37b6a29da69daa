"""The SLA watcher's Redis state (keys ``tm:sla_watcher:*``), with domain verbs.

Keys (this class is their only owner):

- ``due`` zset: one member per pending warning/breach, ``<ticket>:<clock>:<kind>``, scored by
  its due time in epoch seconds (a float, so sub-second precision at any number of clocks);
- ``clock:<ticket>:<clock>`` hash: policy, target, received_at, trace_id, assignee, ``state``
  (running → fulfilled | stopped) and the clock's due members (``CLOCK_TTL_SECONDS`` after the
  last change).

A sweep *claims* due items in one script: they are re-scored to a lease deadline, so no other
replica sees them, and removed once their event is confirmed. A replica that dies mid-batch
leaves its items to fall due again when the lease runs out (at least once, never lost); the
events carry stable ids, so a re-fire is recognisable.
"""
from __future__ import annotations

from dataclasses import dataclass

import redis

from services.sla_watcher.clocks import DueItem

PREFIX = "tm:sla_watcher:"
CLOCK_TTL_SECONDS = 35 * 24 * 3600  # longer than any target; a finished clock is kept for redeliveries
CLAIM_LEASE_SECONDS = 30.0  # far above the time to publish one batch

RUNNING, FULFILLED, STOPPED = "running", "fulfilled", "stopped"

# KEYS: clock, due   ARGV: ttl, n_field_pairs, field, value, ..., member, score, ...
_START = """
if redis.call('HEXISTS', KEYS[1], 'state') == 1 then return 0 end
local n = tonumber(ARGV[2])
local i = 3
for _ = 1, n do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('HSET', KEYS[1], 'state', 'running')
local members = {}
while i < #ARGV do
  redis.call('ZADD', KEYS[2], ARGV[i + 1], ARGV[i])
  table.insert(members, ARGV[i])
  i = i + 2
end
redis.call('HSET', KEYS[1], 'items', table.concat(members, ' '))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""

# KEYS: clock, due   ARGV: new state, at, ttl
_FINISH = """
local state = redis.call('HGET', KEYS[1], 'state')
if state and state ~= 'running' then return state end
local items = redis.call('HGET', KEYS[1], 'items')
if items then
  for member in string.gmatch(items, '%S+') do redis.call('ZREM', KEYS[2], member) end
end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'finished_at', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return state or 'unknown'
"""

# KEYS: clock   ARGV: agent_id
_CLEAR_ASSIGNEE = """
if redis.call('HGET', KEYS[1], 'agent_id') == ARGV[1] then return redis.call('HDEL', KEYS[1], 'agent_id') end
return 0
"""

# KEYS: due   ARGV: now, lease_until, limit
_CLAIM_DUE = """
local items = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[3]))
for i = 1, #items, 2 do redis.call('ZADD', KEYS[1], 'XX', ARGV[2], items[i]) end
return items
"""


@dataclass(frozen=True)
class Clock:
    ticket_id: str
    clock: str
    state: str
    policy: str
    target_seconds: int
    received_at: float
    trace_id: str
    agent_id: str | None


@dataclass(frozen=True)
class ClaimedItem:
    member: str
    due_at: float


class SlaStore:
    due_key = PREFIX + "due"

    def __init__(self, client: redis.Redis):
        self.client = client
        self._start = client.register_script(_START)
        self._finish = client.register_script(_FINISH)
        self._claim_due = client.register_script(_CLAIM_DUE)
        self._clear_assignee = client.register_script(_CLEAR_ASSIGNEE)

    @staticmethod
    def clock_key(ticket_id: str, clock: str) -> str:
        return f"{PREFIX}clock:{ticket_id}:{clock}"

    def start_clock(self, *, ticket_id: str, clock: str, policy: str, target_seconds: int, received_at: float,
                    trace_id: str, items: list[DueItem]) -> bool:
        """Start a clock once: False if it already exists (or was finished before it started)."""
        fields = {"ticket_id": ticket_id, "clock": clock, "policy": policy, "target_seconds": target_seconds,
                  "received_at": repr(received_at), "trace_id": trace_id}
        args: list[str | int | float] = [CLOCK_TTL_SECONDS, len(fields)]
        for name, value in fields.items():
            args += [name, value]
        for item in items:
            args += [item.member, repr(item.due_at)]
        return bool(self._start(keys=[self.clock_key(ticket_id, clock), self.due_key], args=args))

    def set_assignee(self, ticket_id: str, clock: str, agent_id: str) -> None:
        """Remember who holds the ticket, whether or not its clock has started yet."""
        key = self.clock_key(ticket_id, clock)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(key, "agent_id", agent_id)
        pipe.expire(key, CLOCK_TTL_SECONDS)
        pipe.execute()

    def clear_assignee(self, ticket_id: str, clock: str, agent_id: str) -> bool:
        """``agent_id`` no longer holds the ticket: the clock names no assignee, unless a later
        assignment (handled first, events of two kinds may cross) already named someone else."""
        return bool(self._clear_assignee(keys=[self.clock_key(ticket_id, clock)], args=[agent_id]))

    def finish_clock(self, ticket_id: str, clock: str, state: str, *, at: float) -> str:
        """Fulfil or stop a running clock and drop its pending items; returns the state it had.

        A clock finished before it started leaves a tombstone, so a late start does nothing.
        """
        return self._finish(keys=[self.clock_key(ticket_id, clock), self.due_key],
                            args=[state, repr(at), CLOCK_TTL_SECONDS])

    def claim_due(self, now: float, limit: int) -> list[ClaimedItem]:
        """Take up to ``limit`` items due by ``now``, earliest first, for this caller alone."""
        flat = self._claim_due(keys=[self.due_key], args=[repr(now), repr(now + CLAIM_LEASE_SECONDS), limit])
        return [ClaimedItem(member=flat[i], due_at=float(flat[i + 1])) for i in range(0, len(flat), 2)]

    def release(self, member: str) -> None:
        """The item's event is out (or it must not fire): forget it."""
        self.client.zrem(self.due_key, member)

    def clocks(self, keys: list[tuple[str, str]]) -> list[Clock | None]:
        pipe = self.client.pipeline(transaction=False)
        for ticket_id, clock in keys:
            pipe.hgetall(self.clock_key(ticket_id, clock))
        return [_clock(fields) for fields in pipe.execute()]

    def clock(self, ticket_id: str, clock: str) -> Clock | None:
        return _clock(self.client.hgetall(self.clock_key(ticket_id, clock)))

    def due_members(self) -> list[str]:
        return list(self.client.zrange(self.due_key, 0, -1))


def _clock(fields: dict[str, str]) -> Clock | None:
    if "target_seconds" not in fields:
        return None  # nothing started here (a tombstone or only an assignee)
    return Clock(
        ticket_id=fields["ticket_id"], clock=fields["clock"], state=fields.get("state", RUNNING),
        policy=fields["policy"], target_seconds=int(fields["target_seconds"]),
        received_at=float(fields["received_at"]), trace_id=fields["trace_id"], agent_id=fields.get("agent_id"),
    )
