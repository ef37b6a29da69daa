"""The dispatcher's Redis state (keys ``tm:dispatcher:*``), with domain verbs.

Keys (this class is their only owner):

- ``agents`` hash agent_id → profile JSON (skills, languages) and ``capacity`` hash
  ``<agent>:<channel>`` → cap: the roster, rewritten at start from the roster file, which also
  bumps ``roster_version`` (so a snapshot re-reads the roster only when it changed);
- ``presence`` / ``presence_at`` hashes agent_id → presence / epoch of the event that set it;
- ``load`` hash ``<agent>:<channel>`` → open assigned tickets; ``last_assigned`` hash agent → epoch;
- ``open:<agent>`` set of the agent's assigned, unresolved tickets;
- ``ticket:<id>`` hash: routing facts, ``state`` (new → queued → assigned → resolved), assignee,
  decision and which events were already announced. It never expires while queued or assigned
  (an expired assigned ticket could no longer free its agent's capacity); it expires
  ``TICKET_TTL_SECONDS`` after it is resolved, or after it was registered if never queued;
- ``waiting`` zset of queued tickets, scored by priority then received time;
- ``routing:<id>`` lease (``ROUTING_LEASE_MS``): the worker currently routing a received ticket
  (taken together with the ticket's registration, and released together with the
  announcements it confirmed, so routing a ticket costs three round trips: begin, claim, end);
- ``unannounced`` zset of tickets claimed but whose ``ticket_assigned`` is not confirmed yet
  (an outbox: a drain that died between claim and publish is announced by the next drain).

Every change that touches more than one key is one Lua script, so N dispatcher replicas never
assign a ticket twice or put an agent over capacity.
"""
from __future__ import annotations

import contextlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Iterable, Iterator

import redis

from services.dispatcher.routing import AgentSnapshot, TicketNeeds
from shared.errors import TransientError
from shared.roster import AgentProfile

PREFIX = "tm:dispatcher:"
# How long a resolved (or never-routed) ticket is kept: outlives any redelivery. Queued and
# assigned tickets have no TTL at all, however long they stay open.
TICKET_TTL_SECONDS = 30 * 24 * 3600
# One worker routes a given ticket at a time; a worker that died holding it blocks the ticket
# for at most this long (its redelivery is retried until then).
ROUTING_LEASE_MS = 10_000
PRIORITY_RANK = {"P1": 1, "P2": 2, "P3": 3, "P4": 4}
# Queue score = rank * PRIORITY_BAND + received epoch: every P1 before any P2, then oldest first.
PRIORITY_BAND = 1e10

NEW, QUEUED, ASSIGNED, RESOLVED = "new", "queued", "assigned", "resolved"
ANNOUNCED_CLASSIFIED, ANNOUNCED_QUEUED, ANNOUNCED_ASSIGNED = "classified", "queued", "assigned"

# KEYS: routing lease, ticket   ARGV: token, lease ms, ttl, then field/value pairs of the facts
# Returns nil when another worker holds the lease, else the ticket hash as it stands. The lease
# already held with this token counts as taken, so a resend after a lost reply is harmless.
_BEGIN_ROUTING = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return nil end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if redis.call('HSETNX', KEYS[2], 'state', 'new') == 1 then
  for i = 4, #ARGV - 1, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
return redis.call('HGETALL', KEYS[2])
"""

# KEYS: ticket, presence, capacity, load, open(agent), waiting, last_assigned, unannounced
# ARGV: ticket_id, agent_id, channel, now, decision_json
_CLAIM = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'assigned' then return {'existing', redis.call('HGET', KEYS[1], 'agent_id')} end
if state ~= 'new' and state ~= 'queued' then return {'closed', state or 'unknown'} end
local presence = redis.call('HGET', KEYS[2], ARGV[2])
if presence ~= 'online' then return {'no', 'presence: ' .. (presence or 'unknown')} end
local slot = ARGV[2] .. ':' .. ARGV[3]
local cap = tonumber(redis.call('HGET', KEYS[3], slot) or '0')
local load = tonumber(redis.call('HGET', KEYS[4], slot) or '0')
if load >= cap then return {'no', 'capacity: ' .. ARGV[3] .. ' full (' .. load .. '/' .. cap .. ')'} end
redis.call('HINCRBY', KEYS[4], slot, 1)
redis.call('HSET', KEYS[1], 'state', 'assigned', 'agent_id', ARGV[2], 'assigned_at', ARGV[4], 'decision', ARGV[5])
redis.call('PERSIST', KEYS[1])
redis.call('SADD', KEYS[5], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
redis.call('HSET', KEYS[7], ARGV[2], ARGV[4])
redis.call('ZADD', KEYS[8], ARGV[4], ARGV[1])
return {'assigned', ARGV[2]}
"""

# KEYS: ticket, waiting   ARGV: ticket_id, score
_ENQUEUE = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'new' then
  redis.call('HSET', KEYS[1], 'state', 'queued')
  redis.call('PERSIST', KEYS[1])
  state = 'queued'
end
if state == 'queued' then redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[1]) end
return state or 'unknown'
"""

# KEYS: ticket, load, open(expected agent), waiting, unannounced
# ARGV: ticket_id, expected agent ('' if none), now, ttl
_RESOLVE = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'resolved' then return {'already', '', ''} end
if state == 'assigned' then
  local agent = redis.call('HGET', KEYS[1], 'agent_id')
  if agent ~= ARGV[2] then return {'moved', agent, ''} end
  local channel = redis.call('HGET', KEYS[1], 'channel')
  local slot = agent .. ':' .. channel
  if redis.call('HINCRBY', KEYS[2], slot, -1) < 0 then redis.call('HSET', KEYS[2], slot, 0) end
  redis.call('SREM', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[5], ARGV[1])
  redis.call('HSET', KEYS[1], 'state', 'resolved', 'resolved_at', ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  return {'freed', agent, channel}
end
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HSET', KEYS[1], 'state', 'resolved', 'resolved_at', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {'closed', '', ''}
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: presence, presence_at   ARGV: agent_id, presence, at
_SET_PRESENCE = """
local previous = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '-1')
if previous > tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
"""


@dataclass(frozen=True)
class TicketFacts:
    """What routing needs to know about a ticket, kept while it waits."""

    ticket_id: str
    trace_id: str
    channel: str
    priority: str
    required_skills: tuple[str, ...]
    language: str
    tags: tuple[str, ...]
    received_at: datetime

    def needs(self) -> TicketNeeds:
        return TicketNeeds(ticket_id=self.ticket_id, channel=self.channel,
                           required_skills=self.required_skills, language=self.language)

    def queue_score(self) -> float:
        return PRIORITY_RANK[self.priority] * PRIORITY_BAND + self.received_at.timestamp()


@dataclass(frozen=True)
class TicketRecord:
    facts: TicketFacts
    state: str
    agent_id: str | None = None
    decision: dict | None = None
    announced: frozenset[str] = field(default_factory=frozenset)
    accepted_by: str | None = None


@dataclass
class Routing:
    """A received ticket being routed by this worker (it holds the ticket's routing lease).

    Announcements confirmed meanwhile are noted here and written when the lease is released,
    in the same round trip; a worker that dies first leaves them unmarked, so the redelivery
    re-announces them with the same event ids (consumers dedupe), exactly as before.
    """

    record: TicketRecord
    snapshots: list[AgentSnapshot]
    announced: list[str] = field(default_factory=list)

    def note_announced(self, what: str) -> None:
        self.announced.append(what)


@dataclass(frozen=True)
class Roster:
    version: str
    profiles: dict[str, dict]
    capacity: dict[str, dict[str, int]]


@dataclass(frozen=True)
class ClaimResult:
    status: str  # assigned | existing | no | closed
    detail: str  # agent id (assigned/existing) or why not

    @property
    def assigned(self) -> bool:
        return self.status == "assigned"


@dataclass(frozen=True)
class Resolution:
    status: str  # freed | closed | already
    agent_id: str | None = None
    channel: str | None = None

    @property
    def freed_capacity(self) -> bool:
        return self.status == "freed"


def _facts_fields(facts: TicketFacts) -> dict[str, str]:
    return {
        "ticket_id": facts.ticket_id, "trace_id": facts.trace_id, "channel": facts.channel,
        "priority": facts.priority, "required_skills": json.dumps(list(facts.required_skills)),
        "language": facts.language, "tags": json.dumps(list(facts.tags)), "received_at": facts.received_at.isoformat(),
    }


def _record(fields: dict[str, str]) -> TicketRecord | None:
    if "ticket_id" not in fields:
        return None
    facts = TicketFacts(
        ticket_id=fields["ticket_id"], trace_id=fields["trace_id"], channel=fields["channel"],
        priority=fields["priority"], required_skills=tuple(json.loads(fields["required_skills"])),
        language=fields["language"], tags=tuple(json.loads(fields["tags"])), received_at=datetime.fromisoformat(fields["received_at"]),
    )
    announced = frozenset(k.removeprefix("announced_") for k in fields if k.startswith("announced_"))
    decision = json.loads(fields["decision"]) if fields.get("decision") else None
    return TicketRecord(facts=facts, state=fields.get("state", NEW), agent_id=fields.get("agent_id"),
                        decision=decision, announced=announced, accepted_by=fields.get("accepted_by"))


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2]))


class DispatchStore:
    def __init__(self, client: redis.Redis):
        self.client = client
        self._claim = client.register_script(_CLAIM)
        self._enqueue = client.register_script(_ENQUEUE)
        self._resolve = client.register_script(_RESOLVE)
        self._set_presence = client.register_script(_SET_PRESENCE)
        self._release = client.register_script(_RELEASE)
        self._begin_routing = client.register_script(_BEGIN_ROUTING)
        self._roster: Roster | None = None  # the roster as of ``roster_version``, decoded once

    # keys
    agents_key = PREFIX + "agents"
    capacity_key = PREFIX + "capacity"
    presence_key = PREFIX + "presence"
    presence_at_key = PREFIX + "presence_at"
    load_key = PREFIX + "load"
    last_assigned_key = PREFIX + "last_assigned"
    waiting_key = PREFIX + "waiting"
    unannounced_key = PREFIX + "unannounced"
    roster_version_key = PREFIX + "roster_version"

    @staticmethod
    def ticket_key(ticket_id: str) -> str:
        return f"{PREFIX}ticket:{ticket_id}"

    @staticmethod
    def open_key(agent_id: str) -> str:
        return f"{PREFIX}open:{agent_id}"

    # roster and agents
    def load_roster(self, agents: Iterable[AgentProfile]) -> int:
        """Replace the stored profiles with the roster's, in one transaction (presence and load stay)."""
        profiles: dict[str, str] = {}
        capacity: dict[str, int] = {}
        for agent in agents:
            profiles[agent.agent_id] = json.dumps(
                {"name": agent.name, "skills": agent.skills, "languages": agent.languages}, ensure_ascii=False)
            for channel, cap in agent.capacity.items():
                capacity[f"{agent.agent_id}:{channel}"] = cap
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.agents_key, self.capacity_key)
        if profiles:
            pipe.hset(self.agents_key, mapping=profiles)
        if capacity:
            pipe.hset(self.capacity_key, mapping=capacity)
        pipe.incr(self.roster_version_key)
        pipe.execute()
        return len(profiles)

    def set_presence(self, agent_id: str, presence: str, at: float) -> bool:
        """Record presence unless a newer change was already recorded; True if applied."""
        return bool(self._set_presence(keys=[self.presence_key, self.presence_at_key], args=[agent_id, presence, repr(at)]))

    def presence(self, agent_id: str) -> str | None:
        return self.client.hget(self.presence_key, agent_id)

    def is_known_agent(self, agent_id: str) -> bool:
        return bool(self.client.hexists(self.agents_key, agent_id))

    def agent_snapshots(self) -> list[AgentSnapshot]:
        pipe = self.client.pipeline(transaction=False)
        self._queue_snapshot_reads(pipe)
        return self._snapshots(*pipe.execute())

    def _queue_snapshot_reads(self, pipe: redis.client.Pipeline) -> None:
        """What changes per ticket; the roster itself is re-read only when its version moved."""
        pipe.get(self.roster_version_key)
        for key in (self.presence_key, self.load_key, self.last_assigned_key):
            pipe.hgetall(key)

    def _current_roster(self, version: str | None) -> Roster:
        if self._roster is not None and version is not None and self._roster.version == version:
            return self._roster
        pipe = self.client.pipeline(transaction=True)
        pipe.get(self.roster_version_key)
        pipe.hgetall(self.agents_key)
        pipe.hgetall(self.capacity_key)
        read_version, profiles, capacity = pipe.execute()
        caps: dict[str, dict[str, int]] = {}
        for slot, value in capacity.items():
            agent_id, channel = slot.rsplit(":", 1)
            caps.setdefault(agent_id, {})[channel] = int(value)
        roster = Roster(version=read_version, profiles={a: json.loads(raw) for a, raw in profiles.items()}, capacity=caps)
        if read_version is not None:
            self._roster = roster
        return roster

    def _snapshots(self, version: str | None, presence: dict[str, str], load: dict[str, str],
                   last_assigned: dict[str, str]) -> list[AgentSnapshot]:
        roster = self._current_roster(version)
        loads: dict[str, dict[str, int]] = {}
        for slot, value in load.items():
            agent_id, channel = slot.rsplit(":", 1)
            loads.setdefault(agent_id, {})[channel] = int(value)
        snapshots = []
        for agent_id, profile in roster.profiles.items():
            last = last_assigned.get(agent_id)
            snapshots.append(AgentSnapshot(
                agent_id=agent_id, presence=presence.get(agent_id, "offline"), skills=profile["skills"],
                languages=tuple(profile["languages"]), capacity=roster.capacity.get(agent_id, {}),
                load=loads.get(agent_id, {}), last_assigned_at=float(last) if last is not None else None,
            ))
        snapshots.sort(key=lambda a: a.agent_id)
        return snapshots

    def load_of(self, agent_id: str, channel: str) -> int:
        return int(self.client.hget(self.load_key, f"{agent_id}:{channel}") or 0)

    def open_tickets(self, agent_id: str) -> set[str]:
        return set(self.client.smembers(self.open_key(agent_id)))

    # tickets
    @contextlib.contextmanager
    def routing(self, facts: TicketFacts) -> Iterator[Routing]:
        """Route a received ticket: lease it, register it once and snapshot the agents (one round
        trip); on leaving, write the announcements noted meanwhile and release (one round trip).

        A duplicate delivery while the lease is held raises a transient error (retried later).
        """
        lease_key, token = f"{PREFIX}routing:{facts.ticket_id}", uuid.uuid4().hex
        args: list[str | int] = [token, ROUTING_LEASE_MS, TICKET_TTL_SECONDS]
        for name, value in _facts_fields(facts).items():
            args += [name, value]
        keys = [lease_key, self.ticket_key(facts.ticket_id)]

        def begin(pipe: redis.client.Pipeline) -> None:
            pipe.evalsha(self._begin_routing.sha, len(keys), *keys, *args)
            self._queue_snapshot_reads(pipe)

        flat, *snapshot_reads = self._execute_with_scripts(begin)
        if flat is None:
            raise TransientError(f"ticket {facts.ticket_id} is being routed by another worker")
        record = _record(_pairs(flat))
        if record is None:  # a tombstone (resolved before it was received) has no facts
            record = TicketRecord(facts=facts, state=_pairs(flat).get("state", RESOLVED))
        routing = Routing(record=record, snapshots=self._snapshots(*snapshot_reads))
        try:
            yield routing
        finally:
            def end(pipe: redis.client.Pipeline) -> None:
                self._queue_mark_announced(pipe, facts.ticket_id, routing.announced)
                pipe.evalsha(self._release.sha, 1, lease_key, token)

            self._execute_with_scripts(end)

    def _execute_with_scripts(self, queue_commands: Callable[[redis.client.Pipeline], None]) -> list:
        """One round trip for a pipeline that calls scripts by EVALSHA (a Script object in a
        pipeline costs a SCRIPT EXISTS round trip first). If Redis lost its scripts (a restart),
        they are loaded and the pipeline sent again: every such pipeline here is safe to repeat,
        and a script that met NOSCRIPT did not run.
        """
        def send() -> list:
            pipe = self.client.pipeline(transaction=False)
            queue_commands(pipe)
            return pipe.execute()

        try:
            return send()
        except redis.exceptions.NoScriptError:
            for script in (self._begin_routing, self._release):
                self.client.script_load(script.script)
            return send()

    def ticket(self, ticket_id: str) -> TicketRecord | None:
        return _record(self.client.hgetall(self.ticket_key(ticket_id)))

    def tickets(self, ticket_ids: list[str]) -> list[TicketRecord | None]:
        pipe = self.client.pipeline(transaction=False)
        for ticket_id in ticket_ids:
            pipe.hgetall(self.ticket_key(ticket_id))
        return [_record(fields) for fields in pipe.execute()]

    def claim(self, ticket_id: str, agent_id: str, channel: str, *, now: float, decision: dict) -> ClaimResult:
        """Atomically give ``ticket_id`` to ``agent_id`` if it is unassigned and they have room."""
        status, detail = self._claim(
            keys=[self.ticket_key(ticket_id), self.presence_key, self.capacity_key, self.load_key,
                  self.open_key(agent_id), self.waiting_key, self.last_assigned_key, self.unannounced_key],
            args=[ticket_id, agent_id, channel, repr(now), json.dumps(decision, ensure_ascii=False)],
        )
        return ClaimResult(status=status, detail=detail)

    def enqueue(self, facts: TicketFacts) -> str:
        """Put a new ticket in the waiting queue; returns the ticket's state afterwards."""
        return self._enqueue(keys=[self.ticket_key(facts.ticket_id), self.waiting_key],
                             args=[facts.ticket_id, repr(facts.queue_score())])

    def mark_announced(self, ticket_id: str, what: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        self._queue_mark_announced(pipe, ticket_id, [what])
        pipe.execute()

    def _queue_mark_announced(self, pipe: redis.client.Pipeline, ticket_id: str, announced: list[str]) -> None:
        if announced:
            pipe.hset(self.ticket_key(ticket_id), mapping={f"announced_{what}": 1 for what in announced})
        if ANNOUNCED_ASSIGNED in announced:
            pipe.zrem(self.unannounced_key, ticket_id)

    def unannounced_before(self, cutoff: float, limit: int = 100) -> list[str]:
        return self.client.zrangebyscore(self.unannounced_key, "-inf", cutoff, start=0, num=limit)

    def forget_unannounced(self, ticket_id: str) -> None:
        self.client.zrem(self.unannounced_key, ticket_id)

    def forget_waiting(self, ticket_ids: list[str]) -> None:
        """Drop queue members whose ticket record is gone (expired) or no longer queued."""
        if ticket_ids:
            self.client.zrem(self.waiting_key, *ticket_ids)

    def waiting_page(self, after_score: float | None, limit: int) -> tuple[list[str], float | None]:
        """Queued ticket ids in queue order with score > ``after_score``; the cursor for the next page.

        A page never splits tickets of equal score, so the exclusive cursor skips none.
        """
        low = "-inf" if after_score is None else f"({after_score!r}"
        page = self.client.zrangebyscore(self.waiting_key, low, "+inf", start=0, num=limit, withscores=True)
        if not page:
            return [], None
        last_score = page[-1][1]
        if len(page) == limit:
            ties = self.client.zrangebyscore(self.waiting_key, last_score, last_score)
            seen = {m for m, _ in page}
            page += [(m, last_score) for m in ties if m not in seen]
        return [m for m, _ in page], last_score

    def waiting_count(self) -> int:
        return int(self.client.zcard(self.waiting_key))

    def waiting_ids(self) -> list[str]:
        return list(self.client.zrange(self.waiting_key, 0, -1))

    def resolve(self, ticket_id: str, *, now: float) -> Resolution:
        """Close a ticket once: free its agent's capacity, or take it out of the queue."""
        for _ in range(5):  # the assignee is read first so its open set can be named as a key
            agent_id = self.client.hget(self.ticket_key(ticket_id), "agent_id") or ""
            status, agent, channel = self._resolve(
                keys=[self.ticket_key(ticket_id), self.load_key, self.open_key(agent_id or "-"), self.waiting_key,
                      self.unannounced_key],
                args=[ticket_id, agent_id, repr(now), TICKET_TTL_SECONDS],
            )
            if status != "moved":
                return Resolution(status=status, agent_id=agent or None, channel=channel or None)
        raise RuntimeError(f"ticket {ticket_id} kept changing assignee while resolving")

    def record_acceptance(self, ticket_id: str, agent_id: str, *, now: float) -> str | None:
        """Note who accepted; returns the assignee on record (None if the ticket is unknown)."""
        key = self.ticket_key(ticket_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.hget(key, "agent_id")
        pipe.exists(key)
        assignee, exists = pipe.execute()
        if exists:
            self.client.hset(key, mapping={"accepted_by": agent_id, "accepted_at": repr(now)})
        return assignee
