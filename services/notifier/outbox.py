"""The notifier's outbox in Redis: every mail rendered once, then delivered by a schedule.

Keys (``tm:notifier:``; this class is their only owner):

- ``outbox:<notification id>`` – hash: the rendered mail (``raw``, exactly the bytes every
  attempt sends, so a second copy is byte-identical: same Message-ID, same Date), its envelope
  and where it got to (``state``, ``attempts``, ``last_error``, the current sender's ``lease``
  token, ``announced``). Kept ``DONE_TTL_SECONDS`` after it was sent and announced (without the
  body), so a redelivered event within that time sends nothing; kept without expiry while it
  waits, and as a dead letter until replayed.
- ``outbox_due`` – sorted set: notification id → when to look at it next (a new mail: now; a
  deferred one: its next attempt; one a sender is working on: when that sender's lease runs out).
- ``outbox_dead`` – sorted set: notification id → when it failed, for ``ticketmesh
  notifications dead|show|replay``.
- ``sent_to:<address>`` and ``sent_to:<address>:<ticket id>`` – sorted sets: automatic mail
  queued for the address (overall, and about that ticket) by time, trimmed to the longest cap
  window: what the loop-protection caps count. A scope without windows is neither checked nor
  counted (a staff notice: per ticket only, :func:`loop_safety.caps_for`).

States: ``queued`` → ``sending`` (written just before DATA) → ``sent`` (written when the relay
answered DATA with 250); or ``failed`` (refused, 5xx) / ``dead`` (attempts spent), which wait
in ``outbox_dead``. A mail in a final state stays due until its event (``notification_sent`` /
``notification_failed``) is confirmed by the broker (``announced``).

A sender *claims* the first due mail: one script moves its due time to the end of a lease and
stamps the hash with the sender's token. Every later write of that sender checks the token
(another notifier that claimed the mail after the lease ran out owns it now), except writing
``sent``, which is a fact whoever learns it.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import redis.asyncio
from aiosmtplib.email import flatten_message

from services.notifier import loop_safety

PREFIX = "tm:notifier:"
DUE_KEY = PREFIX + "outbox_due"
DEAD_KEY = PREFIX + "outbox_dead"
# Longer than any redelivery of the triggering event or dead-letter replay window: within it
# the same notification id is never sent again.
DONE_TTL_SECONDS = 30 * 24 * 3600
CLAIM_SCAN = 20  # due entries one claim looks at to skip stale ones

QUEUED, SENDING, SENT, FAILED, DEAD = "queued", "sending", "sent", "failed", "dead"
FINAL = (SENT, FAILED, DEAD)

# KEYS: record, due, sent_to (recipient), sent_to (recipient + ticket, or the same again);
# ARGV: nid, now, caps as JSON ("" for none), then the record's field/value pairs.
# The caps check is loop_safety.exceeded's rule: a window is full when it holds ``limit``
# mails sent in (now - seconds, now].
_ENQUEUE = """
local state = redis.call('HGET', KEYS[1], 'state')
if state then return {'existing', state} end
local nid, now = ARGV[1], tonumber(ARGV[2])
if ARGV[3] ~= '' then
  local caps = cjson.decode(ARGV[3])
  local scopes = {}
  -- A scope without windows neither refuses nor counts (a staff notice has no all-tickets cap).
  if caps.ticket and #caps.per_ticket > 0 then table.insert(scopes, {'per_ticket', KEYS[4], caps.per_ticket}) end
  if #caps.per_recipient > 0 then table.insert(scopes, {'per_recipient', KEYS[3], caps.per_recipient}) end
  for _, scope in ipairs(scopes) do
    for _, w in ipairs(scope[3]) do
      if redis.call('ZCOUNT', scope[2], '(' .. (now - w[1]), now) >= w[2] then
        return {'capped', '', scope[1], tostring(w[1])}
      end
    end
  end
  for _, scope in ipairs(scopes) do
    redis.call('ZADD', scope[2], now, nid)
    redis.call('ZREMRANGEBYSCORE', scope[2], '-inf', now - caps.horizon)
    redis.call('EXPIRE', scope[2], math.max(1, math.ceil(caps.horizon)))
  end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('ZADD', KEYS[2], now, nid)
return {'queued', 'queued'}
"""
# KEYS: due; ARGV: now, lease seconds, token, record key prefix, scan
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[5]))
for _, nid in ipairs(due) do
  local key = ARGV[4] .. nid
  local state = redis.call('HGET', key, 'state')
  if not state then
    redis.call('ZREM', KEYS[1], nid)
  else
    redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), nid)
    redis.call('HSET', key, 'lease', ARGV[3])
    local unknown = 0
    if state == 'sending' then
      unknown = 1
      redis.call('HINCRBY', key, 'unknown_outcomes', 1)
    end
    if state == 'queued' or state == 'sending' then
      redis.call('HINCRBY', key, 'attempts', 1)
    end
    local fields = redis.call('HGETALL', key)
    table.insert(fields, 1, unknown)
    table.insert(fields, 1, nid)
    return fields
  end
end
return false
"""
# KEYS: record, due; ARGV: token, now, lease seconds, nid
_MARK_SENDING = """
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'sending', 'last_attempt_at', ARGV[2])
redis.call('ZADD', KEYS[2], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[4])
return 1
"""
# KEYS: record, due; ARGV: token, due at, nid, state, last error
_RESCHEDULE = """
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[4], 'last_error', ARGV[5], 'next_attempt_at', ARGV[2])
redis.call('HDEL', KEYS[1], 'lease')
redis.call('ZADD', KEYS[2], tonumber(ARGV[2]), ARGV[3])
return 1
"""
# KEYS: record, due, dead; ARGV: token, state, reason, now, nid
_GIVE_UP = """
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'reason', ARGV[3], 'failed_at', ARGV[4], 'announced', '0')
redis.call('HINCRBY', KEYS[1], 'failures', 1)
redis.call('ZADD', KEYS[3], tonumber(ARGV[4]), ARGV[5])
return 1
"""
# KEYS: record, due; ARGV: nid, state it was announced in, done ttl
_MARK_ANNOUNCED = """
if redis.call('HGET', KEYS[1], 'state') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'announced', '1')
redis.call('HDEL', KEYS[1], 'lease')
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[2] == 'sent' then
  redis.call('HDEL', KEYS[1], 'raw')
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
end
return 1
"""
# KEYS: record, due, dead; ARGV: now, nid
_REPLAY = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'failed' and state ~= 'dead' then return state or '' end
redis.call('HSET', KEYS[1], 'state', 'queued', 'attempts', '0', 'announced', '0', 'replayed_at', ARGV[1])
redis.call('HDEL', KEYS[1], 'lease')
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZADD', KEYS[2], tonumber(ARGV[1]), ARGV[2])
redis.call('PERSIST', KEYS[1])
return state
"""


@dataclass(frozen=True)
class Letter:
    """One rendered notification, ready for the relay."""

    notification_id: str
    kind: str
    ticket_id: str | None
    trace_id: str
    sender: str          # envelope sender (MAIL FROM)
    recipient: str       # envelope recipient (RCPT TO)
    message_id: str
    raw: bytes
    utf8: bool = False
    automatic: bool = True

    @classmethod
    def render(cls, notification_id: str, kind: str, ticket_id: str | None, trace_id: str, mail: EmailMessage, *,
               sender: str, automatic: bool) -> "Letter":
        recipient = str(mail["To"].addresses[0].addr_spec)
        utf8 = not (recipient.isascii() and sender.isascii())
        # 7bit: the bytes go through any relay unchanged, with or without 8BITMIME.
        raw = flatten_message(mail, utf8=utf8, cte_type="7bit")
        return cls(notification_id, kind, ticket_id, trace_id, sender, recipient, str(mail["Message-ID"]), raw,
                   utf8, automatic)


@dataclass(frozen=True)
class Record:
    """A notification as the outbox holds it."""

    notification_id: str
    state: str
    kind: str
    ticket_id: str | None
    trace_id: str
    sender: str
    recipient: str
    message_id: str
    raw: bytes | None
    utf8: bool
    automatic: bool
    attempts: int
    announced: bool
    failures: int
    created_at: float
    lease: str = ""
    last_error: str = ""
    reason: str = ""
    failed_at: float | None = None
    sent_at: float | None = None
    unknown_outcomes: int = 0
    outcome_unknown: bool = False  # this claim found it "sending": the last attempt's end is unknown

    @classmethod
    def from_hash(cls, notification_id: str, fields: dict[str, str], outcome_unknown: bool = False) -> "Record":
        def number(name: str) -> float | None:
            return float(fields[name]) if fields.get(name) else None

        raw = fields.get("raw")
        return cls(
            notification_id=notification_id, state=fields.get("state", ""), kind=fields.get("kind", ""),
            ticket_id=fields.get("ticket_id") or None, trace_id=fields.get("trace_id", ""),
            sender=fields.get("sender", ""), recipient=fields.get("recipient", ""),
            message_id=fields.get("message_id", ""), raw=base64.b64decode(raw) if raw else None,
            utf8=fields.get("utf8") == "1", automatic=fields.get("automatic") == "1",
            attempts=int(fields.get("attempts") or 0),
            announced=fields.get("announced") == "1", failures=int(fields.get("failures") or 0),
            created_at=number("created_at") or 0.0, lease=fields.get("lease", ""),
            last_error=fields.get("last_error", ""), reason=fields.get("reason", ""),
            failed_at=number("failed_at"), sent_at=number("sent_at"),
            unknown_outcomes=int(fields.get("unknown_outcomes") or 0), outcome_unknown=outcome_unknown,
        )


@dataclass(frozen=True)
class Queued:
    """What :meth:`Outbox.enqueue` did: ``queued`` now, found it ``existing`` (in ``state``), or
    refused it because a cap ``window`` (scope ``per_ticket`` / ``per_recipient``) is full."""

    outcome: str
    state: str = ""
    window: loop_safety.Window | None = None
    scope: str = ""


class Outbox:
    def __init__(self, client: redis.asyncio.Redis):
        self._client = client
        self._enqueue = client.register_script(_ENQUEUE)
        self._claim = client.register_script(_CLAIM)
        self._mark_sending = client.register_script(_MARK_SENDING)
        self._reschedule = client.register_script(_RESCHEDULE)
        self._give_up = client.register_script(_GIVE_UP)
        self._mark_announced = client.register_script(_MARK_ANNOUNCED)
        self._replay = client.register_script(_REPLAY)

    @staticmethod
    def record_key(notification_id: str) -> str:
        return f"{PREFIX}outbox:{notification_id}"

    @staticmethod
    def sent_to_key(address: str, ticket_id: str | None = None) -> str:
        key = f"{PREFIX}sent_to:{loop_safety.normalize_address(address)}"
        return f"{key}:{ticket_id}" if ticket_id else key

    async def enqueue(self, letter: Letter, now: float, caps: loop_safety.Caps | None = None) -> Queued:
        """Store the letter and make it due now, once per notification id. With ``caps`` (automatic
        mail), refuse it if one more mail to its recipient would overflow a window, else count it.
        One script: two notifiers queueing for one recipient at once cannot both pass a full window."""
        capped = caps is not None and caps.applies_to(letter.recipient)
        per_recipient = self.sent_to_key(letter.recipient)
        per_ticket = self.sent_to_key(letter.recipient, letter.ticket_id) if letter.ticket_id else per_recipient
        caps_json = ""
        if capped:
            assert caps is not None
            caps_json = json.dumps({
                "ticket": letter.ticket_id is not None, "horizon": caps.horizon_seconds,
                "per_ticket": [[w.seconds, w.limit] for w in caps.per_ticket],
                "per_recipient": [[w.seconds, w.limit] for w in caps.per_recipient],
            })
        fields = [v for pair in _letter_fields(letter, now).items() for v in pair]
        result = await self._enqueue(keys=[self.record_key(letter.notification_id), DUE_KEY, per_recipient, per_ticket],
                                     args=[letter.notification_id, now, caps_json, *fields])
        outcome, state = result[0], result[1]
        if outcome == "capped":
            assert caps is not None
            scope, seconds = result[2], int(float(result[3]))
            windows = caps.per_ticket if scope == "per_ticket" else caps.per_recipient
            return Queued("capped", window=next(w for w in windows if w.seconds == seconds), scope=scope)
        return Queued(outcome, state=state)

    async def claim(self, now: float, lease_seconds: float, token: str) -> Record | None:
        """The first due notification, now leased to ``token`` until ``now + lease_seconds``."""
        found = await self._claim(keys=[DUE_KEY], args=[now, lease_seconds, token, PREFIX + "outbox:", CLAIM_SCAN])
        if not found:
            return None
        nid, unknown, flat = found[0], found[1], found[2:]
        return Record.from_hash(nid, dict(zip(flat[::2], flat[1::2])), outcome_unknown=bool(int(unknown)))

    async def mark_sending(self, notification_id: str, token: str, now: float, lease_seconds: float) -> bool:
        """Just before DATA: False if another sender holds the lease now (then send nothing)."""
        return bool(await self._mark_sending(keys=[self.record_key(notification_id), DUE_KEY],
                                             args=[token, now, lease_seconds, notification_id]))

    async def mark_sent(self, notification_id: str, now: float) -> None:
        """The relay answered 250: record it whoever holds the lease (it is true either way)."""
        await self._client.hset(self.record_key(notification_id), mapping={"state": SENT, "sent_at": now})

    async def reschedule(self, notification_id: str, token: str, due_at: float, *, state: str = QUEUED,
                         error: str = "") -> bool:
        return bool(await self._reschedule(keys=[self.record_key(notification_id), DUE_KEY],
                                           args=[token, due_at, notification_id, state, error[:500]]))

    async def give_up(self, notification_id: str, token: str, state: str, reason: str, now: float) -> bool:
        """Into the dead letters as ``failed`` (refused) or ``dead`` (attempts spent); it stays due
        until its ``notification_failed`` is announced."""
        assert state in (FAILED, DEAD)
        return bool(await self._give_up(keys=[self.record_key(notification_id), DUE_KEY, DEAD_KEY],
                                        args=[token, state, reason[:500], now, notification_id]))

    async def mark_announced(self, notification_id: str, state: str) -> bool:
        return bool(await self._mark_announced(keys=[self.record_key(notification_id), DUE_KEY],
                                               args=[notification_id, state, DONE_TTL_SECONDS]))

    async def replay(self, notification_id: str, now: float) -> str:
        """Send a dead letter again from attempt 1; returns the state it was in ("" if unknown)."""
        return await self._replay(keys=[self.record_key(notification_id), DUE_KEY, DEAD_KEY],
                                  args=[now, notification_id])

    async def get(self, notification_id: str) -> Record | None:
        fields = await self._client.hgetall(self.record_key(notification_id))
        return Record.from_hash(notification_id, fields) if fields else None

    async def state(self, notification_id: str) -> str | None:
        return await self._client.hget(self.record_key(notification_id), "state")

    async def dead(self, limit: int = 100) -> list[Record]:
        """Dead letters, newest first."""
        ids = await self._client.zrevrange(DEAD_KEY, 0, max(0, limit - 1))
        async with self._client.pipeline(transaction=False) as pipe:
            for nid in ids:
                pipe.hgetall(self.record_key(nid))
            rows = await pipe.execute()
        return [Record.from_hash(nid, fields) for nid, fields in zip(ids, rows) if fields]

    async def next_due(self) -> float | None:
        first = await self._client.zrange(DUE_KEY, 0, 0, withscores=True)
        return first[0][1] if first else None

    async def counts(self) -> dict[str, int]:
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.zcard(DUE_KEY)
            pipe.zcard(DEAD_KEY)
            due, dead = await pipe.execute()
        return {"due": due, "dead": dead}


def _letter_fields(letter: Letter, now: float) -> dict[str, Any]:
    return {
        "state": QUEUED, "kind": letter.kind, "ticket_id": letter.ticket_id or "", "trace_id": letter.trace_id,
        "sender": letter.sender, "recipient": letter.recipient, "message_id": letter.message_id,
        "raw": base64.b64encode(letter.raw).decode("ascii"), "utf8": int(letter.utf8),
        "automatic": int(letter.automatic), "attempts": 0,
        "announced": 0, "failures": 0, "created_at": now,
    }
