"""The dispatcher's Redis state (keys ``tm:dispatcher:*``), with domain verbs.

Keys (this class is their only owner):

- ``agents`` hash agent_id → profile JSON (skills, languages, role, group, tier) and
  ``capacity`` hash ``<agent>:<channel>`` → cap: the roster, rewritten from the roster file at
  start and whenever the file changes, which also bumps ``roster_version`` (so a snapshot
  re-reads the roster only when it changed);
- ``presence`` / ``presence_at`` hashes agent_id → presence / epoch of the event that set it;
- ``load`` hash ``<agent>:<channel>`` → open assigned tickets; ``last_assigned`` hash agent → epoch;
- ``open:<agent>`` set of the agent's assigned, unresolved tickets;
- ``recent:<agent>`` zset ``<ticket>:<attempt>`` → epoch: assignments inside the fairness window
  (trimmed by the claim; expires with the window);
- ``ticket:<id>`` hash: routing facts, ``state`` (new → queued → assigned → resolved, and back
  to queued when an offer is declined/expires or the ticket is moved), assignee, ``attempt``,
  offer expiry, ``declined:<agent>`` → epoch, decision and which events were announced,
  ``unassigned:<attempt>`` per unassignment not announced yet, ``original_<fact>`` (the first
  classification, restored on reopen). It never expires while queued or assigned (an expired
  assigned ticket could no longer free its agent's capacity); it expires ``TICKET_TTL_SECONDS``
  after it is resolved, or after it was registered if never queued;
- ``waiting`` zset of queued tickets, scored by priority then SLA first-response due time;
- ``q:<requirement>`` zsets (same scores) and the ``queues`` set of requirements with waiting
  tickets: a freed agent reads the heads of the queues it can serve, not the whole queue;
- ``avail:<channel>:<skill>`` zsets of agents online with room (see ``_INDEX_FN``), listed in
  ``avail_keys``;
- ``offers`` zset ticket → offer expiry epoch (unaccepted offers, swept by a timer);
- ``relax`` zset ticket → when its next relaxation step is due;
- ``routing:<id>`` lease (``ROUTING_LEASE_MS``): the worker currently routing a received ticket;
- ``unannounced`` zset of tickets claimed but whose ``ticket_assigned`` is not confirmed yet, and
  ``unassigned_outbox`` zset of tickets with a ``ticket_unassigned`` not confirmed yet
  (outboxes: a worker that died between the script and the publish is covered by the timer);
- ``decisions:<id>`` list: the ticket's last ``DECISIONS_KEPT`` routing decisions (JSON);
- ``customer:<key>`` hash (last agent), ``customer:<key>:tickets`` / ``:complaints`` zsets
  ticket → received epoch, ``customer:<key>:open`` set: the per-customer history as kept before
  customer profiles (keyed by chat visitor, email or phone). Written now only for tickets whose
  customer has no profile (no identifier the channel verified); otherwise read together with
  the profile's history (``shared.customer_store``) until it expires (``CUSTOMER_TTL_SECONDS``
  after its last ticket).

Every change that touches more than one key is one Lua script, so N dispatcher replicas never
assign a ticket twice or put an agent over capacity (or over the fairness cap).
"""
from __future__ import annotations

import contextlib
import json
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator

import redis

from services.dispatcher.customers import CustomerHistory
from services.dispatcher.policy import DEFAULT_POLICY, RoutingPolicy
from services.dispatcher.routing import AgentSnapshot, TicketNeeds, new_snapshot, requirement_key
from shared.customer_identity import ContactIdentifiers
from shared.customer_store import HISTORY_READS, ContactOutcome, CustomerStore, ProfileHistory, Resolution
from shared.errors import TransientError
from shared.redis_store import execute_with_scripts
from shared.roster import AgentProfile

PREFIX = "tm:dispatcher:"
# How long a resolved (or never-routed) ticket is kept: outlives any redelivery. Queued and
# assigned tickets have no TTL at all, however long they stay open.
TICKET_TTL_SECONDS = 30 * 24 * 3600
# One worker routes a given ticket at a time; a worker that died holding it blocks the ticket
# for at most this long (its redelivery is retried until then).
ROUTING_LEASE_MS = 10_000
PRIORITY_RANK = {"P1": 1, "P2": 2, "P3": 3, "P4": 4}
# Queue score = rank * PRIORITY_BAND + SLA due epoch: every P1 before any P2, then soonest due.
PRIORITY_BAND = 1e10
DECISIONS_KEPT = 20
# A customer's history (recent tickets, complaints, last agent) is forgotten this long after
# their last ticket; "recent" counts tickets within HISTORY_WINDOW_SECONDS.
CUSTOMER_TTL_SECONDS = 90 * 24 * 3600
HISTORY_WINDOW_SECONDS = 30 * 24 * 3600
CHANNELS = ("email", "chat", "phone")
# Rosters up to this size are ranked whole (so a decision lists every agent left out and why);
# larger ones are ranked a page at a time from the availability index (see _INDEX_FN).
FULL_SCAN_AGENTS = 50
INDEX_PAGE_SIZE = 50

NEW, QUEUED, ASSIGNED, RESOLVED = "new", "queued", "assigned", "resolved"
# The ticket-hash fields that decide who may take a ticket: a claim compares them with what its
# caller ranked by (escalation, transfer and relaxation change them while a ticket waits).
REQUIREMENT_FIELDS = ("required_skills", "language", "group", "tiers")
# Classification fields relaxation and escalation change; kept as ``original_<name>`` and
# restored when a resolved ticket is reopened.
RESTORED_ON_REOPEN = ("required_skills", "tiers", "preferred_skills")
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

# The lease alone, taken in a received contact's first round trip (with its customer's reads,
# before it is classified): nil when another worker holds it, else the ticket hash as it stands.
# KEYS: routing lease, ticket   ARGV: token, lease ms
_TAKE_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return false end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return redis.call('HGETALL', KEYS[2])
"""

# Registering the facts once classified (what _BEGIN_ROUTING does after the lease), sent in the
# round trip of the routing's first write.   KEYS: ticket   ARGV: ttl, then field/value pairs
_REGISTER = """
if redis.call('HSETNX', KEYS[1], 'state', 'new') == 1 then
  for i = 2, #ARGV - 1, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return 1
"""

# The availability index: ``avail:<channel>:<skill>`` zsets of the agents online with room for
# one more ticket of that channel, scored by spare share (3 decimals), then proficiency in that
# skill, then longest idle, so a
# decision reads the top of one zset instead of the whole roster. Every script that changes an
# agent's presence or load calls this for that agent; ``avail_keys`` lists the zsets (for a
# roster reload). Key names are built here (one Redis, not a cluster).
_INDEX_FN = """
local P = '""" + PREFIX + """'
local function reindex(agent, model)
  local raw = redis.call('HGET', P .. 'agents', agent)
  local skills = {}
  if raw then
    local profile = cjson.decode(raw)
    if type(profile['skills']) == 'table' then skills = profile['skills'] end
  end
  local online = redis.call('HGET', P .. 'presence', agent) == 'online'
  local channels = {'email', 'chat', 'phone'}
  local caps, loads, used = {}, {}, 0
  for _, ch in ipairs(channels) do
    caps[ch] = tonumber(redis.call('HGET', P .. 'capacity', agent .. ':' .. ch) or '0')
    loads[ch] = tonumber(redis.call('HGET', P .. 'load', agent .. ':' .. ch) or '0')
    if loads[ch] > 0 then
      if caps[ch] <= 0 then used = used + 1 else used = used + loads[ch] / caps[ch] end
    end
  end
  local last = tonumber(redis.call('HGET', P .. 'last_assigned', agent) or '0')
  for _, ch in ipairs(channels) do
    local fits, share
    if model == 'per_channel' then
      fits = caps[ch] > 0 and loads[ch] < caps[ch]
      if caps[ch] > 0 then share = (caps[ch] - loads[ch]) / caps[ch] else share = 0 end
    else
      fits = caps[ch] > 0 and used + 1 / caps[ch] <= 1 + 1e-9
      share = 1 - used
    end
    local base = math.floor(share * 1000 + 0.5) * 1e11 + (1e10 - last)
    for skill, level in pairs(skills) do
      local key = P .. 'avail:' .. ch .. ':' .. skill
      if online and fits then
        -- spare share, then proficiency in this skill, then longest idle: the ranking's order
        -- (its proficiency bonus is small), so the best candidates sit in the first page
        redis.call('ZADD', key, base + math.min(math.max(tonumber(level) or 0, 0), 9) * 1e10, agent)
        redis.call('SADD', P .. 'avail_keys', key)
      else
        redis.call('ZREM', key, agent)
      end
    end
  end
end
"""

# Queues per requirement: ``q:<requirement>`` zsets (same scores as ``waiting``) and the
# ``queues`` registry set of requirements with a waiting ticket, so a freed agent looks at the
# heads of the few queues it can serve instead of scanning the whole queue. The ticket's
# ``queue`` field names its current requirement.
_QUEUE_FN = """
local QP = '""" + PREFIX + """'
local function dequeue_req(tk, tid)
  local old = redis.call('HGET', tk, 'queue')
  if old then
    redis.call('ZREM', QP .. 'q:' .. old, tid)
    if redis.call('ZCARD', QP .. 'q:' .. old) == 0 then redis.call('SREM', QP .. 'queues', old) end
    redis.call('HDEL', tk, 'queue')
  end
end
local function enqueue_req(tk, tid, req, score)
  local old = redis.call('HGET', tk, 'queue')
  if old and old ~= req then dequeue_req(tk, tid) end
  redis.call('HSET', tk, 'queue', req)
  redis.call('ZADD', QP .. 'q:' .. req, score, tid)
  redis.call('SADD', QP .. 'queues', req)
end
"""

# ARGV: capacity model. Rebuilds the whole index (a roster load): one script, no window.
_REINDEX_ALL = _INDEX_FN + """
for _, key in ipairs(redis.call('SMEMBERS', P .. 'avail_keys')) do redis.call('DEL', key) end
redis.call('DEL', P .. 'avail_keys')
local agents = redis.call('HKEYS', P .. 'agents')
for _, agent in ipairs(agents) do reindex(agent, ARGV[1]) end
return #agents
"""

# The claim as a Lua function, shared by the plain claim and the transfer's move.
# keys: ticket, presence, capacity, load, open(agent), waiting, last_assigned, unannounced,
#       recent(agent), offers, relax, decisions(ticket)
# a: ticket_id, agent_id, channel, now, decision_json, capacity model, fairness window s (0 = off),
#    fairness max, offer expiry ('' = none), force ('1': only presence online/away is checked),
#    decline cooldown s, the requirement stamp the caller ranked by ('' = not checked)
_CLAIM_FN = """
-- The ticket's requirement fields as they stand (see TicketRecord.requirement_stamp).
local function requirement_stamp(tk)
  local parts = {}
  for i, name in ipairs({""" + ", ".join(f"'{n}'" for n in REQUIREMENT_FIELDS) + """}) do
    parts[i] = redis.call('HGET', tk, name) or ''
  end
  return table.concat(parts, '\\n')
end

local function room_error(k, agent, channel, model)
  local cap = tonumber(redis.call('HGET', k[3], agent .. ':' .. channel) or '0')
  if cap <= 0 then return 'capacity: takes no ' .. channel end
  local load = tonumber(redis.call('HGET', k[4], agent .. ':' .. channel) or '0')
  if model == 'per_channel' then
    if load >= cap then return 'capacity: ' .. channel .. ' full (' .. load .. '/' .. cap .. ')' end
    return nil
  end
  local used, others = 0, false
  for _, ch in ipairs({'email', 'chat', 'phone'}) do
    local l = tonumber(redis.call('HGET', k[4], agent .. ':' .. ch) or '0')
    if l > 0 then
      if ch ~= channel then others = true end
      local c = tonumber(redis.call('HGET', k[3], agent .. ':' .. ch) or '0')
      if c <= 0 then used = used + 1 else used = used + l / c end
    end
  end
  if used + 1 / cap > 1 + 1e-9 then
    if not others then return 'capacity: ' .. channel .. ' full (' .. load .. '/' .. cap .. ')' end
    return 'capacity: no room for a ' .. channel .. ' (' .. math.floor(used * 100 + 0.5) .. '% used)'
  end
  return nil
end

local function claim(k, a)
  local state = redis.call('HGET', k[1], 'state')
  if state == 'assigned' then return {'existing', redis.call('HGET', k[1], 'agent_id'), 0} end
  if state ~= 'new' and state ~= 'queued' then return {'closed', state or 'unknown', 0} end
  -- The caller matched the agent against the ticket as it read it; an escalation or transfer
  -- since then changed who may take it.
  if a[12] and a[12] ~= '' and requirement_stamp(k[1]) ~= a[12] then
    return {'stale', 'requirements changed since read', 0}
  end
  local agent, now = a[2], tonumber(a[4])
  local presence = redis.call('HGET', k[2], agent)
  local window = tonumber(a[7])
  if a[10] == '1' then
    if presence ~= 'online' and presence ~= 'away' then return {'no', 'presence: ' .. (presence or 'unknown'), 0} end
  else
    if presence ~= 'online' then return {'no', 'presence: ' .. (presence or 'unknown'), 0} end
    local declined = redis.call('HGET', k[1], 'declined:' .. agent)
    -- no cooldown (a transfer's target): a decline stamped by a replica whose clock runs ahead
    -- must not refuse the claim after the holder already let go
    if declined and tonumber(a[11]) > 0 and tonumber(declined) > now - tonumber(a[11]) then
      return {'no', 'declined: passed on this ticket recently', 0}
    end
    local full = room_error(k, agent, a[3], a[6])
    if full then return {'no', full, 0} end
    if window > 0 then
      redis.call('ZREMRANGEBYSCORE', k[9], '-inf', now - window)
      local n = redis.call('ZCARD', k[9])
      if n >= tonumber(a[8]) then
        return {'no', 'fairness: ' .. n .. ' recent assignments (max ' .. a[8] .. ')', 0}
      end
    end
  end
  redis.call('HINCRBY', k[4], agent .. ':' .. a[3], 1)
  local attempt = redis.call('HINCRBY', k[1], 'attempt', 1)
  redis.call('HDEL', k[1], 'accepted_by', 'accepted_at', 'announced_assigned', 'offer_expires_at')
  redis.call('HSET', k[1], 'state', 'assigned', 'agent_id', agent, 'last_agent_id', agent, 'assigned_at', a[4],
             'decision', a[5])
  if a[9] ~= '' then
    redis.call('HSET', k[1], 'offer_expires_at', a[9])
    redis.call('ZADD', k[10], a[9], a[1])
  end
  redis.call('PERSIST', k[1])
  redis.call('SADD', k[5], a[1])
  redis.call('ZREM', k[6], a[1])
  dequeue_req(k[1], a[1])
  redis.call('ZREM', k[11], a[1])
  redis.call('HSET', k[7], agent, a[4])
  redis.call('ZADD', k[8], a[4], a[1])
  if window > 0 then
    redis.call('ZADD', k[9], a[4], a[1] .. ':' .. attempt)
    redis.call('EXPIRE', k[9], math.ceil(window))
  end
  -- the decision log (see DispatchStore.queue_decision) in the claim's own round trip
  redis.call('RPUSH', k[12], a[5])
  redis.call('LTRIM', k[12], -""" + str(DECISIONS_KEPT) + """, -1)
  redis.call('EXPIRE', k[12], """ + str(TICKET_TTL_SECONDS) + """)
  reindex(agent, a[6])
  return {'assigned', agent, attempt}
end
"""

# The unassignment as a Lua function: the holder's capacity is freed, the ticket goes back to
# the queue (or stays out of it for a move), the event waits in the outbox.
# keys: ticket, load, open(holder), offers, unassigned_outbox, waiting, relax
# a: ticket_id, holder, reason, by, now, waiting score ('' = not queued), mark declined ('1'),
#    note, relax due ('' = none), capacity model, requirement (its queue once back), then
#    field/value pairs to set on the ticket
_UNASSIGN_FN = """
local function unassign(k, a)
  local state = redis.call('HGET', k[1], 'state')
  if state ~= 'assigned' then return {'not_assigned', state or 'unknown', 0} end
  local holder = redis.call('HGET', k[1], 'agent_id')
  if holder ~= a[2] then return {'moved', holder or '', 0} end
  local channel = redis.call('HGET', k[1], 'channel')
  local slot = holder .. ':' .. channel
  if redis.call('HINCRBY', k[2], slot, -1) < 0 then redis.call('HSET', k[2], slot, 0) end
  redis.call('SREM', k[3], a[1])
  redis.call('ZREM', k[4], a[1])
  local attempt = tonumber(redis.call('HGET', k[1], 'attempt') or '1')
  redis.call('HDEL', k[1], 'agent_id', 'accepted_by', 'accepted_at', 'offer_expires_at')
  -- ``unassigned`` is the last one; ``unassigned:<attempt>`` waits for its announcement (a
  -- second unassignment before the first went out must not replace it).
  local info = cjson.encode({agent_id = holder, reason = a[3], by = a[4], attempt = attempt, note = a[8], at = a[5]})
  redis.call('HSET', k[1], 'state', 'queued', 'queued_at', a[5], 'unassigned', info, 'unassigned:' .. attempt, info)
  if a[7] == '1' then redis.call('HSET', k[1], 'declined:' .. holder, a[5]) end
  for i = 12, #a - 1, 2 do redis.call('HSET', k[1], a[i], a[i + 1]) end
  if a[6] ~= '' then
    redis.call('ZADD', k[6], a[6], a[1])
    enqueue_req(k[1], a[1], a[11], a[6])
  end
  if a[9] ~= '' then redis.call('ZADD', k[7], a[9], a[1]) end
  redis.call('ZADD', k[5], a[5], a[1])
  reindex(holder, a[10])
  return {'unassigned', holder, attempt}
end
"""

_CLAIM = _INDEX_FN + _QUEUE_FN + _CLAIM_FN + """
return claim(KEYS, ARGV)
"""

_UNASSIGN = _INDEX_FN + _QUEUE_FN + _UNASSIGN_FN + """
return unassign(KEYS, ARGV)
"""

# ARGV: ticket_id, the offer expiry read. The ``offers`` entry goes only if it is still that
# offer's: another replica may have expired it and offered the ticket again meanwhile.
_FORGET_OFFER_FN = """
local function forget_offer(offers, tid, expiry)
  local score = redis.call('ZSCORE', offers, tid)
  if score and tonumber(score) == tonumber(expiry) then redis.call('ZREM', offers, tid); return 1 end
  return 0
end
"""

# An offer that ran out: only if it is still the same unaccepted offer, and it is due (a
# caller's stale due list must not withdraw a newer offer).
# KEYS: unassign keys   ARGV: unassign args, with ARGV[#ARGV] = the expected offer expiry
_EXPIRE_OFFER = _INDEX_FN + _QUEUE_FN + _UNASSIGN_FN + _FORGET_OFFER_FN + """
local expected = table.remove(ARGV)
if redis.call('HGET', KEYS[1], 'accepted_by') then
  forget_offer(KEYS[4], ARGV[1], expected); return {'accepted', '', 0}
end
if redis.call('HGET', KEYS[1], 'offer_expires_at') ~= expected then
  forget_offer(KEYS[4], ARGV[1], expected); return {'stale', '', 0}
end
if tonumber(expected) > tonumber(ARGV[5]) then return {'not_due', '', 0} end
return unassign(KEYS, ARGV)
"""

# KEYS: offers
_FORGET_OFFER = _FORGET_OFFER_FN + """
return forget_offer(KEYS[1], ARGV[1], ARGV[2])
"""

# A decline answers one offer: a stale or redelivered one (an earlier attempt, or an offer
# already accepted) changes nothing.
# KEYS: unassign keys   ARGV: unassign args, with ARGV[#ARGV] = the attempt declined ('' = any)
_DECLINE = _INDEX_FN + _QUEUE_FN + _UNASSIGN_FN + """
local expected = table.remove(ARGV)
if redis.call('HGET', KEYS[1], 'state') == 'assigned' and redis.call('HGET', KEYS[1], 'agent_id') == ARGV[2] then
  if redis.call('HGET', KEYS[1], 'accepted_by') then return {'accepted', ARGV[2], 0} end
  if expected ~= '' and redis.call('HGET', KEYS[1], 'attempt') ~= expected then return {'stale', ARGV[2], 0} end
end
return unassign(KEYS, ARGV)
"""

# An away/offline agent's unaccepted offer goes back: only while they are still not online.
# KEYS: unassign keys + presence   ARGV: unassign args
_RETURN_OFFER = _INDEX_FN + _QUEUE_FN + _UNASSIGN_FN + """
local presence = redis.call('HGET', KEYS[8], ARGV[2])
if presence == 'online' then return {'online', '', 0} end
if redis.call('HGET', KEYS[1], 'accepted_by') or not redis.call('HGET', KEYS[1], 'offer_expires_at') then
  return {'accepted', '', 0}
end
return unassign(KEYS, ARGV)
"""

# Transfer/reassignment to one agent: the target is checked *before* anything changes (a
# script cannot roll back), then the holder (if any) is unassigned and the target claims. A
# supervisor's reassignment (force) checks only presence (online/away); a transfer checks
# presence, room and fairness like any claim (not the decline cooldown: a person chose them).
# KEYS: 1-7 unassign keys (open of the holder), 8-19 claim keys
# ARGV: [1] expected holder ('' = none expected), [2] n = number of unassign args,
#       then n unassign args, then the claim args
_MOVE = _INDEX_FN + _QUEUE_FN + _UNASSIGN_FN + _CLAIM_FN + """
local uk = {KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]}
local ck = {}
for i = 8, 19 do ck[#ck + 1] = KEYS[i] end
local n = tonumber(ARGV[2])
local ua, ca = {}, {}
for i = 3, 2 + n do ua[#ua + 1] = ARGV[i] end
for i = 3 + n, #ARGV do ca[#ca + 1] = ARGV[i] end
local state = redis.call('HGET', KEYS[1], 'state')
local holder = redis.call('HGET', KEYS[1], 'agent_id') or ''
if state ~= 'assigned' and state ~= 'queued' and state ~= 'new' then return {'closed', state or 'unknown', 0} end
if state ~= 'assigned' then holder = '' end
if holder ~= ARGV[1] then return {'moved', holder, 0} end
if holder == ca[2] then return {'same', holder, 0} end
local presence = redis.call('HGET', ck[2], ca[2])
if ca[10] == '1' then
  if presence ~= 'online' and presence ~= 'away' then return {'no', 'presence: ' .. (presence or 'unknown'), 0} end
else
  if presence ~= 'online' then return {'no', 'presence: ' .. (presence or 'unknown'), 0} end
  local full = room_error(ck, ca[2], ca[3], ca[6])
  if full then return {'no', full, 0} end
  local window = tonumber(ca[7])
  if window > 0 then
    local n = redis.call('ZCOUNT', ck[9], '(' .. (tonumber(ca[4]) - window), '+inf')
    if n >= tonumber(ca[8]) then return {'no', 'fairness: ' .. n .. ' recent assignments (max ' .. ca[8] .. ')', 0} end
  end
end
if holder ~= '' then unassign(uk, ua) end
local result = claim(ck, ca)
for i = 12, #ua - 1, 2 do redis.call('HSET', KEYS[1], ua[i], ua[i + 1]) end
return result
"""

# KEYS: ticket, waiting, relax   ARGV: ticket_id, score, now, relax due ('' = none), requirement
_ENQUEUE = _QUEUE_FN + """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'new' then
  redis.call('HSET', KEYS[1], 'state', 'queued')
  redis.call('HSETNX', KEYS[1], 'queued_at', ARGV[3])
  redis.call('PERSIST', KEYS[1])
  state = 'queued'
  if ARGV[4] ~= '' then redis.call('ZADD', KEYS[3], 'NX', ARGV[4], ARGV[1]) end
end
if state == 'queued' and redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[1]) == 1 then
  enqueue_req(KEYS[1], ARGV[1], ARGV[5], ARGV[2])
end
return state or 'unknown'
"""

# KEYS: ticket, load, open(expected agent), waiting, unannounced, offers, relax
# ARGV: ticket_id, expected agent ('' if none), now, ttl, capacity model
_RESOLVE = _INDEX_FN + _QUEUE_FN + """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'resolved' then return {'already', '', ''} end
redis.call('ZREM', KEYS[6], ARGV[1])
redis.call('ZREM', KEYS[7], ARGV[1])
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
  reindex(agent, ARGV[5])
  return {'freed', agent, channel}
end
redis.call('ZREM', KEYS[4], ARGV[1])
dequeue_req(KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], 'state', 'resolved', 'resolved_at', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {'closed', '', ''}
"""

# KEYS: ticket, waiting, relax
# ARGV: ticket_id, event id, score, now, sticky agent, relax due, requirement (of the original
# classification: what relaxation or escalation changed last time is restored)
_REOPEN = _QUEUE_FN + """
if redis.call('HGET', KEYS[1], 'reopened:' .. ARGV[2]) then return 'duplicate' end
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'resolved' then return state or 'unknown' end
for _, name in ipairs({""" + ", ".join(f"'{n}'" for n in RESTORED_ON_REOPEN) + """}) do
  local original = redis.call('HGET', KEYS[1], 'original_' .. name)
  if original then redis.call('HSET', KEYS[1], name, original) end
end
redis.call('HSET', KEYS[1], 'reopened:' .. ARGV[2], ARGV[4], 'state', 'queued', 'queued_at', ARGV[4],
           'sticky_agent_id', ARGV[5], 'relax_step', 0)
redis.call('HDEL', KEYS[1], 'announced_queued')
redis.call('PERSIST', KEYS[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
enqueue_req(KEYS[1], ARGV[1], ARGV[7], ARGV[3])
if ARGV[6] ~= '' then redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1]) end
return 'reopened'
"""

# KEYS: ticket, relax, waiting   ARGV: ticket_id, expected step index, next due ('' = last step),
#       requirement after the step, then field/value pairs
_RELAX = _QUEUE_FN + """
if redis.call('HGET', KEYS[1], 'state') ~= 'queued' then redis.call('ZREM', KEYS[2], ARGV[1]); return 0 end
if tonumber(redis.call('HGET', KEYS[1], 'relax_step') or '0') ~= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'relax_step', tonumber(ARGV[2]) + 1)
for i = 5, #ARGV - 1, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if ARGV[3] == '' then redis.call('ZREM', KEYS[2], ARGV[1]) else redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1]) end
local score = redis.call('ZSCORE', KEYS[3], ARGV[1])
if score and ARGV[4] ~= '' then enqueue_req(KEYS[1], ARGV[1], ARGV[4], score) end
return 1
"""

# KEYS: ticket, offers   ARGV: ticket_id, agent_id, now, attempt accepted ('' = whatever they hold)
_ACCEPT = """
if redis.call('HGET', KEYS[1], 'state') ~= 'assigned' then return {'not_assigned', ''} end
local holder = redis.call('HGET', KEYS[1], 'agent_id')
if holder ~= ARGV[2] then return {'other', holder or ''} end
if ARGV[4] ~= '' and redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[4] then return {'stale', holder} end
redis.call('HSET', KEYS[1], 'accepted_by', ARGV[2], 'accepted_at', ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[1])
return {'accepted', holder}
"""

# KEYS: ticket, waiting   ARGV: ticket_id, requirement ('' = unchanged), then field/value pairs,
# written only while the ticket is open (a queued ticket moves to its new requirement's queue)
_UPDATE_OPEN_TICKET = _QUEUE_FN + """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'queued' and state ~= 'assigned' then return 0 end
-- The caller decided on a read: a drain claiming the ticket (or an offer ending) since then
-- means the decision must be made again, not written onto a ticket in another state.
if ARGV[3] ~= '' and state ~= ARGV[3] then return 0 end
if ARGV[4] ~= '' and redis.call('HGET', KEYS[1], 'agent_id') ~= ARGV[4] then return 0 end
for i = 5, #ARGV - 1, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if state == 'queued' and score and ARGV[2] ~= '' then enqueue_req(KEYS[1], ARGV[1], ARGV[2], score) end
return 1
"""

# KEYS: ticket, waiting   ARGV: ticket_id, priority, queue score at that priority, marker field ('' = none)
# An SLA escalation raised the priority: a queued ticket moves up both of its queues. Never lowers.
_RAISE_PRIORITY = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'queued' and state ~= 'assigned' then return 'not_open' end
if ARGV[4] ~= '' and redis.call('HEXISTS', KEYS[1], ARGV[4]) == 1 then return 'duplicate' end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], ARGV[4], '1') end
if (redis.call('HGET', KEYS[1], 'priority') or 'P4') <= ARGV[2] then return 'already_at_priority' end
redis.call('HSET', KEYS[1], 'priority', ARGV[2])
if state == 'queued' then
  redis.call('ZADD', KEYS[2], 'XX', ARGV[3], ARGV[1])
  local queue = redis.call('HGET', KEYS[1], 'queue')
  if queue then redis.call('ZADD', '""" + PREFIX + """q:' .. queue, 'XX', ARGV[3], ARGV[1]) end
end
return 'raised'
"""

# KEYS: ticket, unassigned_outbox   ARGV: ticket_id, attempt announced ('' = none)
# The ticket leaves the outbox once no unassignment of it waits for its announcement.
_FORGET_UNASSIGNMENT = """
if ARGV[2] ~= '' then redis.call('HDEL', KEYS[1], 'unassigned:' .. ARGV[2]) end
for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(name, 1, 11) == 'unassigned:' then return 0 end
end
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

# KEYS: q:<requirement>, waiting, queues   ARGV: ticket_id, requirement
_DROP_FROM_QUEUE = """
-- A ticket reopened (queued here again) since the caller read it stays.
if redis.call('HGET', KEYS[4], 'state') == 'queued' and redis.call('HGET', KEYS[4], 'queue') == ARGV[2] then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('SREM', KEYS[3], ARGV[2]) end
"""

# KEYS: routing lease, ticket, unannounced   ARGV: token, ticket_id, then the announcements
# confirmed while the lease was held (ANNOUNCED_*), marked on the ticket (as mark_announced does).
_RELEASE = """
for i = 3, #ARGV do
  redis.call('HSET', KEYS[2], 'announced_' .. ARGV[i], 1)
  if ARGV[i] == '""" + ANNOUNCED_ASSIGNED + """' then redis.call('ZREM', KEYS[3], ARGV[2]) end
end
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: presence, presence_at   ARGV: agent_id, presence, at, capacity model
_SET_PRESENCE = _INDEX_FN + """
local previous = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '-1')
if previous > tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
reindex(ARGV[1], ARGV[4])
return 1
"""

# One page of the availability index and what routing needs of each agent on it, in one call
# (a decision on a large roster costs one round trip more than on a small one, not three).
# KEYS: index zset, presence, load, last_assigned, roster_version
# ARGV: first rank, last rank, fairness cutoff epoch ('' = no fairness window)
# Returns: roster version, index size, ids, presence per id, load per id and channel (CHANNELS
# order), last assigned per id, recent assignments per id (empty without a window).
_INDEX_PAGE = """
local P = '""" + PREFIX + """'
local ids = redis.call('ZREVRANGE', KEYS[1], ARGV[1], ARGV[2])
local total = redis.call('ZCARD', KEYS[1])
local version = redis.call('GET', KEYS[5])
if #ids == 0 then return {version, total, {}, {}, {}, {}, {}} end
local slots = {}
for _, agent in ipairs(ids) do
  for _, ch in ipairs({'email', 'chat', 'phone'}) do slots[#slots + 1] = agent .. ':' .. ch end
end
local recent = {}
if ARGV[3] ~= '' then
  for i, agent in ipairs(ids) do recent[i] = redis.call('ZCOUNT', P .. 'recent:' .. agent, '(' .. ARGV[3], '+inf') end
end
return {version, total, ids, redis.call('HMGET', KEYS[2], unpack(ids)), redis.call('HMGET', KEYS[3], unpack(slots)),
        redis.call('HMGET', KEYS[4], unpack(ids)), recent}
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
    preferred_skills: tuple[str, ...] = ()
    group: str | None = None
    tiers: tuple[str, ...] = ("L1",)
    customer_key: str | None = None
    customer_tier: str = "standard"
    sla_due_at: float | None = None  # epoch of the first-response due time, None = no policy
    sticky_agent_id: str | None = None
    category: str | None = None
    signals: tuple[str, ...] = ()
    matched_rules: tuple[str, ...] = ()
    customer_id: str | None = None      # the customer profile (shared.customer_store)
    customer_summary: str | None = None  # JSON of events.CustomerSummary, as ticket_classified carries it

    def needs(self, declined_by: Iterable[str] = ()) -> TicketNeeds:
        return TicketNeeds(ticket_id=self.ticket_id, channel=self.channel, required_skills=self.required_skills,
                           language=self.language, preferred_skills=self.preferred_skills, group=self.group,
                           tiers=self.tiers, declined_by=frozenset(declined_by), sticky_agent_id=self.sticky_agent_id)

    @property
    def tier(self) -> str:
        from services.dispatcher.routing import tier_rank
        return min(self.tiers, key=tier_rank) if self.tiers else "L1"

    def requirement_key(self) -> str:
        """Which queue the ticket waits in: everything an agent must match (preferences do not)."""
        return requirement_key(self.channel, self.required_skills, self.language, self.group, self.tiers)

    def queue_score(self) -> float:
        due = self.sla_due_at if self.sla_due_at is not None else self.received_at.timestamp()
        return PRIORITY_RANK[self.priority] * PRIORITY_BAND + due


@dataclass(frozen=True)
class TicketRecord:
    facts: TicketFacts
    state: str
    agent_id: str | None = None
    decision: dict | None = None
    announced: frozenset[str] = field(default_factory=frozenset)
    accepted_by: str | None = None
    attempt: int = 0
    offer_expires_at: float | None = None
    declined: dict[str, float] = field(default_factory=dict)  # agent → when they declined/let it expire
    unassigned: dict | None = None  # the last unassignment (for its announcement)
    last_agent_id: str | None = None
    relax_step: int = 0
    queued_at: float | None = None
    escalation_level: int = 0
    requirement_stamp: str = ""  # the REQUIREMENT_FIELDS as read, for the claim to compare
    pending_unassignments: dict[int, dict] = field(default_factory=dict)  # attempt → not yet announced
    original: dict[str, str] = field(default_factory=dict)  # RESTORED_ON_REOPEN as first classified

    def original_facts(self) -> TicketFacts:
        """The facts as first classified (what a reopen routes by)."""
        return facts_with(self.facts, self.original)

    def declined_since(self, cutoff: float) -> set[str]:
        return {a for a, at in self.declined.items() if at > cutoff}


@dataclass
class Routing:
    """A received ticket being routed by this worker (it holds the ticket's routing lease).

    Announcements confirmed meanwhile are noted here and written when the lease is released,
    in the same round trip; a worker that dies first leaves them unmarked, so the redelivery
    re-announces them with the same event ids (consumers dedupe), exactly as before.
    """

    record: TicketRecord
    snapshots: list[AgentSnapshot] | None  # None: a large roster, ranked from the index instead
    announced: list[str] = field(default_factory=list)
    # A large roster: (channel, skill, agents, index size) of the first page of the index this
    # delivery's facts name, read in the lease's round trip.
    first_page: tuple[str, str, list[AgentSnapshot], int] | None = None

    # Bookkeeping writes (decision log, customer history) queued for the release round trip. A
    # worker dying first loses them, not the routing: the claim and its decision are on the
    # ticket, and the redelivery finds it assigned.
    later: list[Callable[[redis.client.Pipeline], None]] = field(default_factory=list)
    # The facts still to register (ticket key, _REGISTER's ARGV): sent ahead of the first write
    # (claim or enqueue), else with the release; None once sent or when already registered.
    register: tuple[str, list] | None = None

    def queue_register(self, pipe: redis.client.Pipeline, sha: str) -> None:
        if self.register is not None:
            key, args = self.register
            pipe.evalsha(sha, 1, key, *args)

    def note_announced(self, what: str) -> None:
        self.announced.append(what)


@dataclass
class Received:
    """A received ticket's first round trip (``DispatchStore.receive``): its customer resolved
    with their history, its routing lease taken, the ticket as it stood and, for a roster ranked
    whole, the agents' state. ``DispatchStore.routing`` takes it over (and releases the lease);
    if routing never starts (the contact was attached, or something failed), the caller releases."""

    ticket_id: str
    lease_key: str
    token: str
    resolution: Resolution
    history: ProfileHistory
    legacy: CustomerHistory
    decided: ContactOutcome | None
    fields: dict[str, str]
    snapshot_reads: list | None  # None: a large roster, read from the index once classified
    roster: "Roster | None"      # the cached roster the snapshot reads were queued for
    handed_over: bool = False


@dataclass(frozen=True)
class Roster:
    version: str
    profiles: dict[str, dict]
    capacity: dict[str, dict[str, int]]
    # agent → (skills, languages, capacity, group, tier) as snapshots carry them, built once per
    # roster version so a snapshot does not rebuild them per ticket
    statics: dict[str, tuple] = field(default_factory=dict)
    order: tuple[str, ...] = ()  # agent ids sorted, the order of a whole-roster snapshot


@dataclass(frozen=True)
class ClaimResult:
    status: str  # assigned | existing | no | closed | moved | same | stale (requirements changed since read)
    detail: str  # agent id (assigned/existing/moved) or why not
    attempt: int = 0

    @property
    def assigned(self) -> bool:
        return self.status == "assigned"


@dataclass(frozen=True)
class Unassignment:
    status: str  # unassigned | not_assigned | moved | accepted | stale | not_due | online
    agent_id: str | None = None
    attempt: int = 0

    @property
    def done(self) -> bool:
        return self.status == "unassigned"


@dataclass(frozen=True)
class Resolution:
    status: str  # freed | closed | already
    agent_id: str | None = None
    channel: str | None = None

    @property
    def freed_capacity(self) -> bool:
        return self.status == "freed"


def _opt(value: str | None) -> str:
    return "" if value is None else value


def _facts_fields(facts: TicketFacts) -> dict[str, str]:
    return {
        "ticket_id": facts.ticket_id, "trace_id": facts.trace_id, "channel": facts.channel,
        "priority": facts.priority, "required_skills": json.dumps(list(facts.required_skills)),
        "language": facts.language, "tags": json.dumps(list(facts.tags)), "received_at": facts.received_at.isoformat(),
        "preferred_skills": json.dumps(list(facts.preferred_skills)), "group": _opt(facts.group),
        "tiers": json.dumps(list(facts.tiers)), "customer_key": _opt(facts.customer_key),
        "customer_tier": facts.customer_tier, "sla_due_at": "" if facts.sla_due_at is None else repr(facts.sla_due_at),
        "sticky_agent_id": _opt(facts.sticky_agent_id), "category": _opt(facts.category),
        "signals": json.dumps(list(facts.signals)), "matched_rules": json.dumps(list(facts.matched_rules)),
        "customer_id": _opt(facts.customer_id), "customer_summary": _opt(facts.customer_summary),
        **{f"original_{name}": json.dumps(list(getattr(facts, name))) for name in RESTORED_ON_REOPEN},
    }


def facts_with(facts: TicketFacts, updates: dict[str, str]) -> TicketFacts:
    """``facts`` as they read once ``updates`` (ticket-hash fields) are written."""
    changes: dict = {}
    if "group" in updates:
        changes["group"] = updates["group"] or None
    if "tiers" in updates:
        changes["tiers"] = tuple(json.loads(updates["tiers"]))
    if "preferred_skills" in updates:
        changes["preferred_skills"] = tuple(json.loads(updates["preferred_skills"]))
    if "required_skills" in updates:
        changes["required_skills"] = tuple(json.loads(updates["required_skills"]))
    if "sticky_agent_id" in updates:
        changes["sticky_agent_id"] = updates["sticky_agent_id"] or None
    return replace(facts, **changes) if changes else facts


def _json_list(fields: dict[str, str], name: str, default: tuple = ()) -> tuple:
    raw = fields.get(name)
    return tuple(json.loads(raw)) if raw else default


def _float(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None


def _record(fields: dict[str, str]) -> TicketRecord | None:
    if "ticket_id" not in fields:
        return None
    facts = TicketFacts(
        ticket_id=fields["ticket_id"], trace_id=fields["trace_id"], channel=fields["channel"],
        priority=fields["priority"], required_skills=tuple(json.loads(fields["required_skills"])),
        language=fields["language"], tags=tuple(json.loads(fields["tags"])),
        received_at=datetime.fromisoformat(fields["received_at"]),
        preferred_skills=_json_list(fields, "preferred_skills"), group=fields.get("group") or None,
        tiers=_json_list(fields, "tiers", ("L1",)), customer_key=fields.get("customer_key") or None,
        customer_tier=fields.get("customer_tier") or "standard", sla_due_at=_float(fields.get("sla_due_at")),
        sticky_agent_id=fields.get("sticky_agent_id") or None, category=fields.get("category") or None,
        signals=_json_list(fields, "signals"), matched_rules=_json_list(fields, "matched_rules"),
        customer_id=fields.get("customer_id") or None, customer_summary=fields.get("customer_summary") or None,
    )
    announced = frozenset(k.removeprefix("announced_") for k in fields if k.startswith("announced_"))
    decision = json.loads(fields["decision"]) if fields.get("decision") else None
    declined = {k.removeprefix("declined:"): float(v) for k, v in fields.items() if k.startswith("declined:")}
    return TicketRecord(
        facts=facts, state=fields.get("state", NEW), agent_id=fields.get("agent_id"), decision=decision,
        announced=announced, accepted_by=fields.get("accepted_by"), attempt=int(fields.get("attempt") or 0),
        offer_expires_at=_float(fields.get("offer_expires_at")), declined=declined,
        unassigned=json.loads(fields["unassigned"]) if fields.get("unassigned") else None,
        last_agent_id=fields.get("last_agent_id"), relax_step=int(fields.get("relax_step") or 0),
        queued_at=_float(fields.get("queued_at")), escalation_level=int(fields.get("escalation_level") or 0),
        requirement_stamp="\n".join(fields.get(name, "") for name in REQUIREMENT_FIELDS),
        pending_unassignments={int(k.removeprefix("unassigned:")): json.loads(v) for k, v in fields.items()
                               if k.startswith("unassigned:")},
        original={name: fields[f"original_{name}"] for name in RESTORED_ON_REOPEN if f"original_{name}" in fields},
    )


def _legacy_from(values: list, exclude: str | None) -> CustomerHistory:
    tickets, complaints, open_, info = values
    drop = {exclude} if exclude else set()
    return CustomerHistory(
        recent_tickets=len(set(tickets) - drop), recent_complaints=len(set(complaints) - drop),
        open_tickets=len(set(open_) - drop), last_agent_id=info.get("last_agent_id") or None,
        last_agent_at=_float(info.get("last_agent_at")))


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2]))


class DispatchStore:
    def __init__(self, client: redis.Redis, policy: RoutingPolicy = DEFAULT_POLICY):
        self.client = client
        self.customers = CustomerStore(client)
        self.policy = policy  # the provider sets the loaded one
        self.full_scan_agents = FULL_SCAN_AGENTS
        self._claim = client.register_script(_CLAIM)
        self._unassign = client.register_script(_UNASSIGN)
        self._expire_offer = client.register_script(_EXPIRE_OFFER)
        self._forget_offer = client.register_script(_FORGET_OFFER)
        self._decline = client.register_script(_DECLINE)
        self._forget_unassignment = client.register_script(_FORGET_UNASSIGNMENT)
        self._drop_from_queue = client.register_script(_DROP_FROM_QUEUE)
        self._return_offer = client.register_script(_RETURN_OFFER)
        self._move = client.register_script(_MOVE)
        self._enqueue = client.register_script(_ENQUEUE)
        self._resolve = client.register_script(_RESOLVE)
        self._reopen = client.register_script(_REOPEN)
        self._relax = client.register_script(_RELAX)
        self._accept = client.register_script(_ACCEPT)
        self._update_open = client.register_script(_UPDATE_OPEN_TICKET)
        self._raise_priority = client.register_script(_RAISE_PRIORITY)
        self._set_presence = client.register_script(_SET_PRESENCE)
        self._release = client.register_script(_RELEASE)
        self._begin_routing = client.register_script(_BEGIN_ROUTING)
        self._take_lease = client.register_script(_TAKE_LEASE)
        self._register = client.register_script(_REGISTER)
        self._reindex_all = client.register_script(_REINDEX_ALL)
        self._index_page = client.register_script(_INDEX_PAGE)
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
    unassigned_outbox_key = PREFIX + "unassigned_outbox"
    offers_key = PREFIX + "offers"
    relax_key = PREFIX + "relax"
    queues_key = PREFIX + "queues"
    roster_version_key = PREFIX + "roster_version"

    @staticmethod
    def ticket_key(ticket_id: str) -> str:
        return f"{PREFIX}ticket:{ticket_id}"

    @staticmethod
    def open_key(agent_id: str) -> str:
        return f"{PREFIX}open:{agent_id}"

    @staticmethod
    def recent_key(agent_id: str) -> str:
        return f"{PREFIX}recent:{agent_id}"

    @staticmethod
    def decisions_key(ticket_id: str) -> str:
        return f"{PREFIX}decisions:{ticket_id}"

    @staticmethod
    def customer_key(key: str) -> str:
        return f"{PREFIX}customer:{key}"

    # roster and agents
    def load_roster(self, agents: Iterable[AgentProfile]) -> int:
        """Replace the stored profiles with the roster's, in one transaction (presence and load stay)."""
        profiles: dict[str, str] = {}
        capacity: dict[str, int] = {}
        for agent in agents:
            profiles[agent.agent_id] = json.dumps(
                {"name": agent.name, "skills": agent.skills, "languages": agent.languages, "role": agent.role,
                 "group": agent.group, "tier": agent.tier}, ensure_ascii=False)
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
        self._reindex_all(args=[self.policy.capacity_model])
        return len(profiles)

    def set_presence(self, agent_id: str, presence: str, at: float) -> bool:
        """Record presence unless a newer change was already recorded; True if applied."""
        return bool(self._set_presence(keys=[self.presence_key, self.presence_at_key],
                                       args=[agent_id, presence, repr(at), self.policy.capacity_model]))

    def presence(self, agent_id: str) -> str | None:
        return self.client.hget(self.presence_key, agent_id)

    def is_known_agent(self, agent_id: str) -> bool:
        return bool(self.client.hexists(self.agents_key, agent_id))

    def profile(self, agent_id: str) -> dict | None:
        return self._current_roster(self.client.get(self.roster_version_key)).profiles.get(agent_id)

    def agent_snapshots(self, now: float | None = None) -> list[AgentSnapshot]:
        pipe = self.client.pipeline(transaction=False)
        self._queue_snapshot_reads(pipe, now)
        return self._snapshots(*pipe.execute())

    def _queue_snapshot_reads(self, pipe: redis.client.Pipeline, now: float | None = None) -> None:
        """What changes per ticket; the roster itself is re-read only when its version moved."""
        pipe.get(self.roster_version_key)
        for key in (self.presence_key, self.load_key, self.last_assigned_key):
            pipe.hgetall(key)
        window = self.policy.fairness_window_seconds
        roster = self._roster
        if window and roster is not None and now is not None:
            # Per agent of the cached roster; a roster change meanwhile only costs a stale count
            # (the claim enforces the cap anyway).
            for agent_id in roster.profiles:
                pipe.zcount(self.recent_key(agent_id), f"({now - window!r}", "+inf")

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
        decoded = {a: json.loads(raw) for a, raw in profiles.items()}
        statics = {a: (p["skills"], tuple(p["languages"]), caps.get(a, {}), p.get("group"), p.get("tier") or "L1")
                   for a, p in decoded.items()}
        roster = Roster(version=read_version, profiles=decoded, capacity=caps, statics=statics,
                        order=tuple(sorted(decoded)))
        if read_version is not None:
            self._roster = roster
        return roster

    def _snapshots(self, version: str | None, presence: dict[str, str], load: dict[str, str],
                   last_assigned: dict[str, str], *recent_counts: int,
                   queued_for: Roster | None = None) -> list[AgentSnapshot]:
        cached = queued_for if queued_for is not None else self._roster  # the roster the counts were read for
        roster = self._current_roster(version)
        recent: dict[str, int] = {}
        if recent_counts and cached is not None:
            recent = dict(zip(cached.profiles, recent_counts))
        loads: dict[str, dict[str, int]] = {}
        for slot, value in load.items():
            agent_id, channel = slot.rsplit(":", 1)
            loads.setdefault(agent_id, {})[channel] = int(value)
        # per ticket for every agent: the roster's part is built once per version (statics, order)
        statics = roster.statics
        snapshots = []
        for agent_id in roster.order:
            skills, languages, capacity, group, tier = statics[agent_id]
            last = last_assigned.get(agent_id)
            snapshots.append(new_snapshot(
                agent_id, presence.get(agent_id, "offline"), skills, languages, capacity, loads.get(agent_id, {}),
                float(last) if last is not None else None, group, tier, recent.get(agent_id, 0)))
        return snapshots

    @staticmethod
    def index_key(channel: str, skill: str) -> str:
        return f"{PREFIX}avail:{channel}:{skill}"

    def uses_index(self) -> bool:
        roster = self._roster
        return roster is not None and len(roster.profiles) > self.full_scan_agents

    def index_page(self, channel: str, skill: str, *, page: int, now: float) -> tuple[list[AgentSnapshot], int]:
        """Page ``page`` of the agents online with room for one more ``channel`` ticket who have
        ``skill``, best spare share then longest idle first; and how many the index holds."""
        keys, args = self._index_page_call(channel, skill, page, now)
        return self._page_snapshots(self._index_page(keys=keys, args=args))

    def _index_page_call(self, channel: str, skill: str, page: int, now: float) -> tuple[list[str], list]:
        start = page * INDEX_PAGE_SIZE
        window = self.policy.fairness_window_seconds
        return ([self.index_key(channel, skill), self.presence_key, self.load_key, self.last_assigned_key,
                 self.roster_version_key], [start, start + INDEX_PAGE_SIZE - 1, repr(now - window) if window else ""])

    def _page_snapshots(self, reply: list) -> tuple[list[AgentSnapshot], int]:
        version, total, ids, presence, loads, last, recent = reply
        if not ids:
            return [], int(total)
        statics = self._current_roster(version).statics
        snapshots = []
        for i, agent_id in enumerate(ids):
            static = statics.get(agent_id)
            if static is None:
                continue
            skills, languages, capacity, group, tier = static
            load = {}
            if loads[3 * i] or loads[3 * i + 1] or loads[3 * i + 2]:  # most agents at the top hold nothing
                for channel, value in zip(CHANNELS, loads[3 * i:3 * i + 3]):  # the script reads CHANNELS in order
                    if value and int(value):
                        load[channel] = int(value)
            snapshots.append(new_snapshot(
                agent_id, presence[i] or "offline", skills, languages, capacity, load,
                float(last[i]) if last[i] else None, group, tier, int(recent[i]) if recent else 0))
        return snapshots, int(total)

    def load_of(self, agent_id: str, channel: str) -> int:
        return int(self.client.hget(self.load_key, f"{agent_id}:{channel}") or 0)

    def open_tickets(self, agent_id: str) -> set[str]:
        return set(self.client.smembers(self.open_key(agent_id)))

    # tickets
    def receive(self, contact: ContactIdentifiers, legacy_key: str | None, ticket_id: str, *, now: float,
                name: str | None) -> Received:
        """A received ticket's first round trip: ``resolve_customer``'s reads (and a new customer's
        creation), the routing lease and the ticket as it stands, and a whole roster's agent state
        (``agent_snapshots``), so that routing it costs two more (claim, release). A duplicate
        delivery while the lease is held raises a transient error (retried later)."""
        lease_key, token = f"{PREFIX}routing:{ticket_id}", uuid.uuid4().hex
        roster = self._roster
        whole_roster = not self.uses_index()  # a large roster is read from the index once classified

        def reads(pipe: redis.client.Pipeline) -> None:
            if legacy_key:
                self._queue_legacy_reads(pipe, legacy_key, now=now)
            pipe.evalsha(self._take_lease.sha, 2, lease_key, self.ticket_key(ticket_id), token, ROUTING_LEASE_MS)
            if whole_roster:
                self._queue_snapshot_reads(pipe, now)

        found = self.customers.resolve_contact(contact, ticket_id, now=now, name=name, queue_reads=reads,
                                               scripts=(self._take_lease,))
        values = found.reads
        skip = 4 if legacy_key else 0
        flat = values[skip]
        if flat is None:
            raise TransientError(f"ticket {ticket_id} is being routed by another worker")
        return Received(ticket_id=ticket_id, lease_key=lease_key, token=token, resolution=found.resolution,
                        history=found.history, legacy=_legacy_from(values[:4], ticket_id) if legacy_key else
                        CustomerHistory(), decided=found.decided, fields=_pairs(flat),
                        snapshot_reads=values[skip + 1:] if whole_roster else None, roster=roster)

    def release(self, received: Received) -> None:
        """Give up the lease of a received ticket that was not routed (``routing`` releases its own)."""
        if not received.handed_over:
            received.handed_over = True
            self._release(keys=[received.lease_key, self.ticket_key(received.ticket_id), self.unannounced_key],
                          args=[received.token, received.ticket_id])

    @contextlib.contextmanager
    def routing(self, facts: TicketFacts, now: float | None = None,
                received: Received | None = None) -> Iterator[Routing]:
        """Route a received ticket: lease it, register it once and snapshot the agents (one round
        trip); on leaving, write the announcements noted meanwhile and release (one round trip).
        ``received``: the lease was taken (and a whole roster read) by ``receive``; the facts are
        registered with the first write (claim or enqueue) instead.

        A duplicate delivery while the lease is held raises a transient error (retried later).
        """
        if received is not None:
            received.handed_over = True
            lease_key, token = received.lease_key, received.token
        else:
            lease_key, token = f"{PREFIX}routing:{facts.ticket_id}", uuid.uuid4().hex
        fields = _facts_fields(facts)
        args: list[str | int] = [token, ROUTING_LEASE_MS, TICKET_TTL_SECONDS]
        for name, value in fields.items():
            args += [name, value]
        keys = [lease_key, self.ticket_key(facts.ticket_id)]
        routing: Routing | None = None
        try:
            whole_roster = not self.uses_index() if received is None else received.snapshot_reads is not None
            page_call = None
            if not whole_roster and facts.required_skills and now is not None:
                page_call = self._index_page_call(facts.channel, facts.required_skills[0], 0, now)
            register = None
            if received is None:
                def begin(pipe: redis.client.Pipeline) -> None:
                    pipe.evalsha(self._begin_routing.sha, len(keys), *keys, *args)
                    if whole_roster:
                        self._queue_snapshot_reads(pipe, now)
                    elif page_call is not None:
                        pipe.evalsha(self._index_page.sha, len(page_call[0]), *page_call[0], *page_call[1])

                flat, *snapshot_reads = self._execute_with_scripts(begin)
                if flat is None:
                    raise TransientError(f"ticket {facts.ticket_id} is being routed by another worker")
                stored = _pairs(flat)
                snapshots = self._snapshots(*snapshot_reads) if whole_roster else None
            else:
                stored = received.fields
                if "state" not in stored:  # what _REGISTER will write (as _BEGIN_ROUTING would have)
                    register = (keys[1], [TICKET_TTL_SECONDS, *args[3:]])
                    stored = {**stored, **fields, "state": NEW}
                snapshots = None
                if whole_roster:
                    snapshots = self._snapshots(*received.snapshot_reads, queued_for=received.roster)
                elif page_call is not None:  # the index page names the facts: read (and register) now
                    def page(pipe: redis.client.Pipeline) -> None:
                        if register is not None:
                            pipe.evalsha(self._register.sha, 1, register[0], *register[1])
                        pipe.evalsha(self._index_page.sha, len(page_call[0]), *page_call[0], *page_call[1])

                    snapshot_reads = self._execute_with_scripts(page)[-1:]
                    register = None
            record = _record(stored)
            if record is None:  # a tombstone (resolved before it was received) has no facts
                record = TicketRecord(facts=facts, state=stored.get("state", RESOLVED))
            routing = Routing(record=record, snapshots=snapshots, register=register,
                              first_page=(facts.channel, facts.required_skills[0],
                                          *self._page_snapshots(snapshot_reads[0])) if page_call is not None else None)
            yield routing
        finally:
            def end(pipe: redis.client.Pipeline) -> None:
                if routing is not None:
                    routing.queue_register(pipe, self._register.sha)  # never written: still registered once
                    for queue_writes in routing.later:
                        queue_writes(pipe)
                # the announcements noted meanwhile are marked by the release script
                pipe.evalsha(self._release.sha, 3, lease_key, self.ticket_key(facts.ticket_id), self.unannounced_key,
                             token, facts.ticket_id, *(routing.announced if routing is not None else ()))

            if routing is not None or received is not None:
                self._execute_with_scripts(end)

    def _execute_with_scripts(self, queue_commands: Callable[[redis.client.Pipeline], None]) -> list:
        """One round trip for a pipeline of this store's scripts (shared.redis_store.execute_with_scripts:
        every such pipeline here is safe to repeat)."""
        return execute_with_scripts(self.client, queue_commands, (
            self._begin_routing, self._release, self._index_page, self._take_lease, self._register, self._claim,
            self._enqueue, self.customers.note_ticket_script))

    def ticket(self, ticket_id: str) -> TicketRecord | None:
        return _record(self.client.hgetall(self.ticket_key(ticket_id)))

    def tickets(self, ticket_ids: list[str]) -> list[TicketRecord | None]:
        pipe = self.client.pipeline(transaction=False)
        for ticket_id in ticket_ids:
            pipe.hgetall(self.ticket_key(ticket_id))
        return [_record(fields) for fields in pipe.execute()]

    def _claim_keys(self, ticket_id: str, agent_id: str) -> list[str]:
        return [self.ticket_key(ticket_id), self.presence_key, self.capacity_key, self.load_key,
                self.open_key(agent_id), self.waiting_key, self.last_assigned_key, self.unannounced_key,
                self.recent_key(agent_id), self.offers_key, self.relax_key, self.decisions_key(ticket_id)]

    def _claim_args(self, ticket_id: str, agent_id: str, channel: str, now: float, decision: dict,
                    offer_expires_at: float | None, force: bool, requirement: str | None = None,
                    decline_cooldown: float | None = None) -> list:
        policy = self.policy
        cooldown = policy.decline_cooldown_seconds if decline_cooldown is None else decline_cooldown
        return [ticket_id, agent_id, channel, repr(now), json.dumps(decision, ensure_ascii=False),
                policy.capacity_model, repr(policy.fairness_window_seconds or 0), policy.fairness_max or 0,
                "" if offer_expires_at is None else repr(offer_expires_at), "1" if force else "0",
                repr(cooldown), requirement or ""]

    def claim(self, ticket_id: str, agent_id: str, channel: str, *, now: float, decision: dict,
              offer_expires_at: float | None = None, force: bool = False,
              requirement: str | None = None, routing: Routing | None = None) -> ClaimResult:
        """Atomically give ``ticket_id`` to ``agent_id`` if it is unassigned and they have room
        (``force``: only presence is checked — a supervisor's explicit choice). ``requirement``:
        the ``requirement_stamp`` the caller ranked by; status ``stale`` when it changed since.
        ``routing``: its facts still to register go first, in the same round trip."""
        keys = self._claim_keys(ticket_id, agent_id)
        args = self._claim_args(ticket_id, agent_id, channel, now, decision, offer_expires_at, force, requirement)
        status, detail, attempt = self._with_register(routing, self._claim, keys, args)
        return ClaimResult(status=status, detail=detail, attempt=int(attempt))

    def _with_register(self, routing: Routing | None, script: redis.commands.core.Script, keys: list,
                       args: list) -> Any:
        """``script``'s reply; a routing's facts still to register are sent first, in its round trip."""
        if routing is None or routing.register is None:
            return script(keys=keys, args=args)

        def both(pipe: redis.client.Pipeline) -> None:
            routing.queue_register(pipe, self._register.sha)
            pipe.evalsha(script.sha, len(keys), *keys, *args)

        reply = self._execute_with_scripts(both)[-1]
        routing.register = None
        return reply

    def _unassign_keys(self, ticket_id: str, holder: str) -> list[str]:
        return [self.ticket_key(ticket_id), self.load_key, self.open_key(holder or "-"), self.offers_key,
                self.unassigned_outbox_key, self.waiting_key, self.relax_key]

    def _unassign_args(self, ticket_id: str, holder: str, reason: str, *, by: str | None, now: float,
                       score: float | None, declined: bool, note: str, relax_due: float | None,
                       updates: dict[str, str] | None, requirement: str = "") -> list:
        args: list = [ticket_id, holder, reason, by or "", repr(now), "" if score is None else repr(score),
                      "1" if declined else "0", note, "" if relax_due is None else repr(relax_due),
                      self.policy.capacity_model, requirement]
        for name, value in (updates or {}).items():
            args += [name, value]
        return args

    def unassign(self, ticket_id: str, holder: str, reason: str, *, now: float, score: float | None,
                 by: str | None = None, declined: bool = False, note: str = "", relax_due: float | None = None,
                 updates: dict[str, str] | None = None, requirement: str = "") -> Unassignment:
        """Take the ticket from ``holder`` (if they still hold it), free their capacity and put it
        back in the queue with ``score`` (None: out of the queue); ``updates`` change its facts."""
        status, agent, attempt = self._unassign(
            keys=self._unassign_keys(ticket_id, holder),
            args=self._unassign_args(ticket_id, holder, reason, by=by, now=now, score=score, declined=declined,
                                     note=note, relax_due=relax_due, updates=updates, requirement=requirement))
        return Unassignment(status, agent or None, int(attempt))

    def expire_offer(self, ticket_id: str, holder: str, expected_expiry: str, *, now: float, score: float,
                     relax_due: float | None, requirement: str) -> Unassignment:
        args = self._unassign_args(ticket_id, holder, "offer_expired", by=None, now=now, score=score, declined=True,
                                   note="", relax_due=relax_due, updates=None, requirement=requirement)
        status, agent, attempt = self._expire_offer(keys=self._unassign_keys(ticket_id, holder),
                                                    args=[*args, expected_expiry])
        return Unassignment(status, agent or None, int(attempt))

    def decline(self, ticket_id: str, holder: str, *, attempt: int | None, now: float, score: float, note: str,
                relax_due: float | None, requirement: str) -> Unassignment:
        """``holder`` passes on offer ``attempt`` (None: whatever they hold); never an accepted one."""
        args = self._unassign_args(ticket_id, holder, "declined", by=holder, now=now, score=score, declined=True,
                                   note=note, relax_due=relax_due, updates=None, requirement=requirement)
        status, agent, number = self._decline(keys=self._unassign_keys(ticket_id, holder),
                                              args=[*args, "" if attempt is None else str(attempt)])
        return Unassignment(status, agent or None, int(number))

    def return_offer(self, ticket_id: str, holder: str, reason: str, *, now: float, score: float,
                     relax_due: float | None, requirement: str) -> Unassignment:
        args = self._unassign_args(ticket_id, holder, reason, by=holder, now=now, score=score, declined=False,
                                   note="", relax_due=relax_due, updates=None, requirement=requirement)
        status, agent, attempt = self._return_offer(keys=[*self._unassign_keys(ticket_id, holder), self.presence_key],
                                                    args=args)
        return Unassignment(status, agent or None, int(attempt))

    def move(self, ticket_id: str, *, holder: str | None, target: str, channel: str, reason: str, by: str,
             now: float, decision: dict, updates: dict[str, str] | None = None, force: bool = True) -> ClaimResult:
        """Hand the ticket from ``holder`` (None: it is queued) to ``target`` in one step.

        ``force`` (a supervisor's reassignment): only the target's presence is checked; else the
        target needs room and fairness like any claim (a decline cooldown does not apply)."""
        uargs = self._unassign_args(ticket_id, holder or "", reason, by=by, now=now, score=None, declined=False,
                                    note="", relax_due=None, updates=updates)
        cargs = self._claim_args(ticket_id, target, channel, now, decision, None, force, decline_cooldown=0)
        status, detail, attempt = self._move(
            keys=[*self._unassign_keys(ticket_id, holder or ""), *self._claim_keys(ticket_id, target)],
            args=[holder or "", len(uargs), *uargs, *cargs])
        return ClaimResult(status=status, detail=detail, attempt=int(attempt))

    def enqueue(self, facts: TicketFacts, *, now: float | None = None, relax_due: float | None = None,
                routing: Routing | None = None) -> str:
        """Put a new ticket in the waiting queue; returns the ticket's state afterwards."""
        return self._with_register(routing, self._enqueue,
                                   [self.ticket_key(facts.ticket_id), self.waiting_key, self.relax_key],
                                   [facts.ticket_id, repr(facts.queue_score()),
                                    repr(now if now is not None else facts.received_at.timestamp()),
                                    "" if relax_due is None else repr(relax_due), facts.requirement_key()])

    def reopen(self, ticket_id: str, event_id: str, *, score: float, now: float, sticky_agent_id: str | None,
               relax_due: float | None, requirement: str) -> str:
        return self._reopen(keys=[self.ticket_key(ticket_id), self.waiting_key, self.relax_key],
                            args=[ticket_id, event_id, repr(score), repr(now), sticky_agent_id or "",
                                  "" if relax_due is None else repr(relax_due), requirement])

    def relax(self, ticket_id: str, step_index: int, *, next_due: float | None, updates: dict[str, str],
              requirement: str = "") -> bool:
        args: list = [ticket_id, step_index, "" if next_due is None else repr(next_due), requirement]
        for name, value in updates.items():
            args += [name, value]
        return bool(self._relax(keys=[self.ticket_key(ticket_id), self.relax_key, self.waiting_key], args=args))

    def relax_due(self, now: float, limit: int = 100) -> list[str]:
        return self.client.zrangebyscore(self.relax_key, "-inf", repr(now), start=0, num=limit)

    def update_open_ticket(self, ticket_id: str, updates: dict[str, str], requirement: str = "", *,
                           expect_state: str = "", expect_holder: str = "") -> bool:
        """Change an open ticket's facts; a queued one moves to ``requirement``'s queue. False
        (nothing written) when it is closed, or not in ``expect_state`` / held by ``expect_holder``."""
        args: list = [ticket_id, requirement, expect_state, expect_holder]
        for name, value in updates.items():
            args += [name, value]
        return bool(self._update_open(keys=[self.ticket_key(ticket_id), self.waiting_key], args=args))

    # queues per requirement
    @staticmethod
    def queue_key(requirement: str) -> str:
        return f"{PREFIX}q:{requirement}"

    def requirements_waiting(self) -> list[str]:
        return sorted(self.client.smembers(self.queues_key))

    def queue_heads(self, requirements: list[str], depth: int) -> list[tuple[str, float, str]]:
        """The first ``depth`` tickets of each requirement's queue: (ticket, score, requirement)."""
        pipe = self.client.pipeline(transaction=False)
        for requirement in requirements:
            pipe.zrange(self.queue_key(requirement), 0, depth - 1, withscores=True)
        heads = []
        for requirement, page in zip(requirements, pipe.execute()):
            heads += [(ticket_id, score, requirement) for ticket_id, score in page]
        return heads

    def drop_from_queue(self, requirement: str, ticket_id: str) -> None:
        """A queue member whose ticket is gone (expired) or no longer waiting there."""
        self._drop_from_queue(keys=[self.queue_key(requirement), self.waiting_key, self.queues_key,
                                    self.ticket_key(ticket_id)], args=[ticket_id, requirement])

    def agent_snapshot(self, agent_id: str, now: float) -> AgentSnapshot | None:
        """One agent as routing sees them (for a drain on their behalf)."""
        slots = [f"{agent_id}:{c}" for c in CHANNELS]
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.roster_version_key)
        pipe.hget(self.presence_key, agent_id)
        pipe.hmget(self.load_key, slots)
        pipe.hget(self.last_assigned_key, agent_id)
        window = self.policy.fairness_window_seconds
        if window:
            pipe.zcount(self.recent_key(agent_id), f"({now - window!r}", "+inf")
        version, presence, loads, last, *recent = pipe.execute()
        profile = self._current_roster(version).profiles.get(agent_id)
        if profile is None:
            return None
        return AgentSnapshot(
            agent_id=agent_id, presence=presence or "offline", skills=profile["skills"],
            languages=tuple(profile["languages"]), capacity=self._current_roster(version).capacity.get(agent_id, {}),
            load={c: int(n) for c, n in zip(CHANNELS, loads) if n and int(n)},
            last_assigned_at=float(last) if last else None, group=profile.get("group"),
            tier=profile.get("tier") or "L1", recent_assignments=int(recent[0]) if recent else 0)

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

    def unassignments_before(self, cutoff: float, limit: int = 100) -> list[str]:
        return self.client.zrangebyscore(self.unassigned_outbox_key, "-inf", cutoff, start=0, num=limit)

    def forget_unassignment(self, ticket_id: str, attempt: int | None) -> None:
        """The ``ticket_unassigned`` of ``attempt`` went out (None: none is pending); the ticket
        leaves the outbox once none of its unassignments waits any more."""
        self._forget_unassignment(keys=[self.ticket_key(ticket_id), self.unassigned_outbox_key],
                                  args=[ticket_id, "" if attempt is None else str(attempt)])

    def due_offers(self, now: float, limit: int = 100) -> list[tuple[str, float]]:
        return self.client.zrangebyscore(self.offers_key, "-inf", repr(now), start=0, num=limit, withscores=True)

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
                      self.unannounced_key, self.offers_key, self.relax_key],
                args=[ticket_id, agent_id, repr(now), TICKET_TTL_SECONDS, self.policy.capacity_model],
            )
            if status != "moved":
                return Resolution(status=status, agent_id=agent or None, channel=channel or None)
        raise RuntimeError(f"ticket {ticket_id} kept changing assignee while resolving")

    def accept(self, ticket_id: str, agent_id: str, *, now: float,
               attempt: int | None = None) -> tuple[str, str | None]:
        """Mark offer ``attempt`` accepted if ``agent_id`` holds it (None: whichever offer they
        hold): (status, holder); status ``stale`` when they hold a later offer."""
        status, holder = self._accept(keys=[self.ticket_key(ticket_id), self.offers_key],
                                      args=[ticket_id, agent_id, repr(now), "" if attempt is None else str(attempt)])
        return status, holder or None

    def record_acceptance(self, ticket_id: str, agent_id: str, *, now: float) -> str | None:
        """Compatibility: accept and return the assignee on record (None if unknown)."""
        _, holder = self.accept(ticket_id, agent_id, now=now)
        return holder if holder is not None else self.client.hget(self.ticket_key(ticket_id), "agent_id")

    def mark_escalated(self, ticket_id: str, level: int) -> bool:
        """True the first time this escalation level is seen for the ticket."""
        key = self.ticket_key(ticket_id)
        if int(self.client.hget(key, "escalation_level") or 0) >= level:
            return False
        return self.update_open_ticket(ticket_id, {"escalation_level": str(level)})

    # decision records
    def record_decision(self, ticket_id: str, decision: dict) -> None:
        pipe = self.client.pipeline(transaction=True)
        self.queue_decision(pipe, ticket_id, decision)
        pipe.execute()

    def queue_decision(self, pipe: redis.client.Pipeline, ticket_id: str, decision: dict) -> None:
        key = self.decisions_key(ticket_id)
        pipe.rpush(key, json.dumps(decision, ensure_ascii=False, default=str))
        pipe.ltrim(key, -DECISIONS_KEPT, -1)
        pipe.expire(key, TICKET_TTL_SECONDS)

    def decisions(self, ticket_id: str) -> list[dict]:
        """The ticket's last routing decisions, oldest first (for the ops CLI)."""
        return [json.loads(raw) for raw in self.client.lrange(self.decisions_key(ticket_id), 0, -1)]

    # customer history: the profile's (shared.customer_store), plus the legacy per-key one until it expires
    def customer_history(self, key: str | None, *, now: float, exclude: str | None = None) -> CustomerHistory:
        """The legacy history kept under ``customer:<key>``."""
        if not key:
            return CustomerHistory()
        pipe = self.client.pipeline(transaction=False)
        self._queue_legacy_reads(pipe, key, now=now)
        return _legacy_from(pipe.execute(), exclude)

    def _queue_legacy_reads(self, pipe: redis.client.Pipeline, key: str, *, now: float) -> None:
        base = self.customer_key(key)
        since = f"({now - HISTORY_WINDOW_SECONDS!r}"
        pipe.zrangebyscore(base + ":tickets", since, "+inf")
        pipe.zrangebyscore(base + ":complaints", since, "+inf")
        pipe.smembers(base + ":open")
        pipe.hgetall(base)

    def resolve_customer(self, contact: ContactIdentifiers, legacy_key: str | None, ticket_id: str, *, now: float,
                         name: str | None) -> tuple[Resolution, ProfileHistory, CustomerHistory, ContactOutcome | None]:
        """The received contact's profile (found, created or merged), its history, the legacy
        per-key one and what was decided for this contact before (a redelivery): what
        resolving the profile and then reading those would return, in fewer round trips (one for a
        new customer, two for a returning one)."""
        def legacy_reads(pipe: redis.client.Pipeline) -> None:
            if legacy_key:
                self._queue_legacy_reads(pipe, legacy_key, now=now)

        found = self.customers.resolve_contact(contact, ticket_id, now=now, name=name, queue_reads=legacy_reads)
        legacy = _legacy_from(found.reads, ticket_id) if legacy_key else CustomerHistory()
        return found.resolution, found.history, legacy, found.decided

    def record_customer_ticket(self, facts: TicketFacts, ticket_id: str, *, received: float, complaint: bool) -> None:
        pipe = self.client.pipeline(transaction=True)
        self.queue_customer_ticket(pipe, facts, ticket_id, received=received, complaint=complaint)
        pipe.execute()

    def queue_customer_ticket(self, pipe: redis.client.Pipeline, facts: TicketFacts, ticket_id: str, *,
                              received: float, complaint: bool, scripted: bool = False) -> None:
        """``scripted``: the profile's history in one command (only in a pipeline sent by
        ``_execute_with_scripts``, which loads the script if Redis lost it)."""
        if facts.customer_id and scripted:
            self.customers.queue_ticket_by_script(pipe, facts.customer_id, ticket_id, channel=facts.channel,
                                                  received=received, complaint=complaint)
        elif facts.customer_id:
            self.customers.queue_ticket(pipe, facts.customer_id, ticket_id, channel=facts.channel, received=received,
                                        complaint=complaint)
        elif facts.customer_key:  # a ticket routed before profiles, reopened: its history is the legacy one
            base = self.customer_key(facts.customer_key)
            pipe.zadd(base + ":tickets", {ticket_id: received})
            pipe.zremrangebyscore(base + ":tickets", "-inf", received - HISTORY_WINDOW_SECONDS)
            if complaint:
                pipe.zadd(base + ":complaints", {ticket_id: received})
            pipe.sadd(base + ":open", ticket_id)
            for suffix in (":tickets", ":complaints", ":open", ""):
                pipe.expire(base + suffix, CUSTOMER_TTL_SECONDS)

    def queue_customer_agent(self, pipe: redis.client.Pipeline, facts: TicketFacts, agent_id: str, *,
                             at: float) -> None:
        if facts.customer_id:
            self.customers.queue_agent(pipe, facts.customer_id, agent_id, at=at)
        elif facts.customer_key:
            pipe.hset(self.customer_key(facts.customer_key), mapping={"last_agent_id": agent_id, "last_agent_at": repr(at)})
            pipe.expire(self.customer_key(facts.customer_key), CUSTOMER_TTL_SECONDS)

    def customer_ticket_closed(self, facts: TicketFacts, ticket_id: str) -> None:
        if facts.customer_id:
            self.customers.ticket_closed(facts.customer_id, ticket_id)
        if facts.customer_key:
            self.client.srem(self.customer_key(facts.customer_key) + ":open", ticket_id)

    def record_resolved_contact(self, customer_id: str | None, key: str | None, ticket_id: str, *, channel: str,
                                received: float, agent_id: str | None) -> None:
        """A ticket resolved before anyone routed it (a call resolved on first contact): in the
        customer's history, not open, with who helped; one transaction."""
        if not customer_id and not key:
            return
        pipe = self.client.pipeline(transaction=True)
        if customer_id:
            self.customers.queue_ticket(pipe, customer_id, ticket_id, channel=channel, received=received,
                                        complaint=False)
            self.customers.queue_ticket_closed(pipe, customer_id, ticket_id)
            if agent_id:
                self.customers.queue_agent(pipe, customer_id, agent_id, at=received)
        else:
            base = self.customer_key(key)
            pipe.zadd(base + ":tickets", {ticket_id: received})
            pipe.zremrangebyscore(base + ":tickets", "-inf", received - HISTORY_WINDOW_SECONDS)
            if agent_id:
                pipe.hset(base, mapping={"last_agent_id": agent_id, "last_agent_at": repr(received)})
            for suffix in (":tickets", ""):
                pipe.expire(base + suffix, CUSTOMER_TTL_SECONDS)
        pipe.execute()

    def last_agent_of(self, ticket_id: str) -> str | None:
        return self.client.hget(self.ticket_key(ticket_id), "last_agent_id")

    def raise_priority(self, ticket_id: str, priority: str, score: float, marker: str = "") -> str:
        """``raised`` (a queued ticket re-scored to ``score``), ``already_at_priority``, ``not_open``,
        or ``duplicate`` when the ``marker`` field (one per escalation event) is set already: an
        old escalation redelivered after a reopen does not raise the priority again."""
        return self._raise_priority(keys=[self.ticket_key(ticket_id), self.waiting_key],
                                    args=[ticket_id, priority, repr(score), marker])

    def has_field(self, ticket_id: str, name: str) -> bool:
        return bool(self.client.hexists(self.ticket_key(ticket_id), name))

    def forget_offer(self, ticket_id: str, expiry: float) -> None:
        """Drop the ticket's ``offers`` entry if it is still the one due at ``expiry`` (a newer
        offer keeps its own)."""
        self._forget_offer(keys=[self.offers_key], args=[ticket_id, repr(expiry)])

    # --- roster reload and the ops CLI (``ticketmesh dispatch``): additive, reads only but reindex
    def reindex(self) -> int:
        """Rebuild the availability index under the current capacity model (the policy changed)."""
        return int(self._reindex_all(args=[self.policy.capacity_model]))

    def loaded_agents(self) -> set[str]:
        """Agents holding at least one open ticket (a roster reload looks for removed ones here)."""
        return {slot.rsplit(":", 1)[0] for slot, n in self.client.hgetall(self.load_key).items() if int(n) > 0}

    def open_tickets_of(self, agent_ids: list[str]) -> dict[str, set[str]]:
        pipe = self.client.pipeline(transaction=False)
        for agent_id in agent_ids:
            pipe.smembers(self.open_key(agent_id))
        return {agent_id: set(members) for agent_id, members in zip(agent_ids, pipe.execute())}

    def queue_stats(self, page: int = 1000) -> list[tuple[str, int, float | None]]:
        """Each requirement queue: (requirement, tickets waiting, earliest ``queued_at`` among them).

        Reads every member's ``queued_at`` (pipelined, ``page`` at a time): an operator's view,
        not a routing path.
        """
        stats = []
        for requirement in self.requirements_waiting():
            key = self.queue_key(requirement)
            count, oldest, start = int(self.client.zcard(key)), None, 0
            while start < count:
                members = self.client.zrange(key, start, start + page - 1)
                if not members:
                    break
                pipe = self.client.pipeline(transaction=False)
                for ticket_id in members:
                    pipe.hget(self.ticket_key(ticket_id), "queued_at")
                for raw in pipe.execute():
                    at = _float(raw)
                    if at is not None and (oldest is None or at < oldest):
                        oldest = at
                start += page
            stats.append((requirement, count, oldest))
        return stats
