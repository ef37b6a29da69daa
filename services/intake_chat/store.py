"""intake_chat's Redis keys (all ``tm:intake_chat:``), behind domain verbs.

- ``visitor:<visitor_id>`` hash: ``conversation`` (counter; with the visitor id it is the natural
  key of a conversation in the intake ledger), the open ``ticket_id`` with its ``trace_id`` and
  ``opening_cmid``, ``last_ticket_id``/``last_trace_id`` (the one closed before), and the profile
  (``name``, ``email``, ``phone``, ``language``);
- ``ticket:<ticket_id>`` string: the visitor id of that ticket (to route agent replies);
- ``msg:<visitor_id>:<client_message_id>`` hash: the event built for the message (``event_type``,
  ``body``), its ``ticket_id``, whether the broker confirmed it (``published``) and its
  transcript position (``seq``): the dedupe record that makes a resent message answer with the
  same ids and never publish twice;
- ``transcript:<ticket_id>`` list of JSON entries, each with its ``seq`` (1, 2, 3 ... per ticket),
  capped at ``TRANSCRIPT_MAX_ENTRIES``; a reconnecting widget says the last ``seq`` it holds and
  is sent what follows;
- ``state:<ticket_id>`` hash: ``seq`` (the counter behind the transcript positions),
  ``delivered`` (highest position a widget confirmed it holds), ``emailed`` (highest position
  mailed as a missed reply), ``last_agent`` (position of the newest agent reply), ``subject``;
- ``reply:<reply_id>`` string: the transcript position of this agent reply (it is there once);
- ``missed`` zset ticket → when to look whether its newest agent replies reached a widget
  (claimed by pushing the score one lease ahead, so one replica at a time mails them);
- ``upload:<visitor_id>:<upload_id>`` hash: a stored file (``sha256``, ``filename``,
  ``content_type``, ``size``) until a message names it;
- ``rate:<limit>:<subject>:<window>`` counters (fixed windows) for the abuse limits;
- ``typing:<ticket_id>`` marker: a ``chat_typing`` went out in the current window.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import redis.asyncio
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

from shared.intake_ledger import CONTACT_TTL_SECONDS

from services.intake_chat.validation import Profile

# The conversation counter must outlive the ledger's contact keys, or a returning visitor's
# reset counter would reclaim an old ticket.
VISITOR_TTL_SECONDS = CONTACT_TTL_SECONDS + 7 * 24 * 3600
TICKET_TTL_SECONDS = CONTACT_TTL_SECONDS
MESSAGE_DEDUPE_TTL_SECONDS = 7 * 24 * 3600  # widgets resend from localStorage for days at most
TRANSCRIPT_TTL_SECONDS = 30 * 24 * 3600
TRANSCRIPT_MAX_ENTRIES = 200
REPLY_MARKER_TTL_SECONDS = 30 * 24 * 3600
UPLOAD_TTL_SECONDS = 24 * 3600  # an upload not sent within a day is forgotten (the file stays)
MISSED_CLAIM_SECONDS = 60  # a replica that died while mailing: another one looks again after this
TYPING_WINDOW_SECONDS = 3

_PROFILE_FIELDS = ("name", "email", "phone", "language")

# Appends one entry with the next position: ``{"seq":N,`` is spliced in front of the entry's
# own JSON object (cjson would turn an empty list into an object), then the list is capped.
_APPEND_FN = """
local function append(state, transcript, entry, max_entries, ttl)
  local n = redis.call('HINCRBY', state, 'seq', 1)
  redis.call('RPUSH', transcript, '{"seq":' .. n .. ',' .. string.sub(entry, 2))
  redis.call('LTRIM', transcript, -max_entries, -1)
  redis.call('EXPIRE', transcript, ttl)
  redis.call('EXPIRE', state, ttl)
  return n
end
"""

# KEYS: msg, transcript, state; ARGV: entry JSON, max entries, ttl.
# Returns {1, seq} on the transition to published, {0, seq} if it already was.
_MARK_PUBLISHED = _APPEND_FN + """
local published = redis.call('HGET', KEYS[1], 'published')
if published ~= '0' then return {0, tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')} end
local n = append(KEYS[3], KEYS[2], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'published', '1', 'seq', n)
return {1, n}
"""

# KEYS: reply marker, transcript, state, missed; ARGV: entry JSON, max entries, ttl, marker ttl,
# ticket id, when to look whether it was received. Returns {1, seq} when appended now, {0, seq}
# when the reply was already there. Appending and scheduling the missed-reply look are one step.
_APPEND_REPLY = _APPEND_FN + """
local existing = redis.call('GET', KEYS[1])
if existing then return {0, tonumber(existing)} end
local n = append(KEYS[3], KEYS[2], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
redis.call('SET', KEYS[1], n, 'EX', tonumber(ARGV[4]))
redis.call('HSET', KEYS[3], 'last_agent', n)
redis.call('ZADD', KEYS[4], 'NX', ARGV[6], ARGV[5])
return {1, n}
"""

# KEYS: visitor; ARGV: ticket id, its trace id. Closes the visitor's conversation if this ticket is still the
# open one (a late or repeated resolution changes nothing).
_CLOSE = """
if redis.call('HGET', KEYS[1], 'ticket_id') ~= ARGV[1] then return 0 end
redis.call('HINCRBY', KEYS[1], 'conversation', 1)
redis.call('HDEL', KEYS[1], 'ticket_id', 'trace_id', 'opening_cmid')
redis.call('HSET', KEYS[1], 'last_ticket_id', ARGV[1], 'last_trace_id', ARGV[2])
return 1
"""

# KEYS: msg; ARGV: ttl, then field/value pairs. Creates the record unless it exists.
_CREATE_MESSAGE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
"""

# KEYS: visitor, msg; ARGV: visitor ttl, then the profile's field/value pairs to store (maybe none).
# Returns {msg fields, visitor fields} as flat lists, the visitor read after the profile is stored.
_ARRIVAL = """
if #ARGV > 1 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 2))
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
end
return {redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[1])}
"""

# KEYS: visitor, ticket, state, msg; ARGV: ticket id, trace id, opening cmid, visitor id, subject,
# then the ttls of visitor, ticket, state and msg, then the msg's field/value pairs.
_OPEN_CONVERSATION = """
redis.call('HSET', KEYS[1], 'ticket_id', ARGV[1], 'trace_id', ARGV[2], 'opening_cmid', ARGV[3])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
redis.call('SET', KEYS[2], ARGV[4], 'EX', tonumber(ARGV[7]))
redis.call('HSET', KEYS[3], 'subject', ARGV[5])
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[8]))
redis.call('HSET', KEYS[4], unpack(ARGV, 10))
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[9]))
return 1
"""

# KEYS: state; ARGV: field, value, ttl. Raises a position field, never lowers it.
_RAISE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) <= old then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS: missed; ARGV: now, claim until, limit. Tickets due now, each pushed a lease ahead.
_CLAIM_MISSED = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, ticket in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], ticket) end
return due
"""

# KEYS: missed, state; ARGV: ticket, looked up to (position), next look. Done with a claim; an
# agent reply that came meanwhile gets its own look.
_FINISH_MISSED = """
redis.call('ZREM', KEYS[1], ARGV[1])
if tonumber(redis.call('HGET', KEYS[2], 'last_agent') or '0') > tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
end
return 1
"""

# KEYS: counter; ARGV: ttl. Fixed-window counter.
_COUNT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1])) end
return n
"""


def _pairs(flat: list[str]) -> dict[str, str]:
    """A hash as a script returns it (field, value, field, value ...) as a dict."""
    return dict(zip(flat[::2], flat[1::2]))


@dataclass(frozen=True)
class Visitor:
    visitor_id: str
    conversation: int
    ticket_id: str | None
    trace_id: str | None
    opening_cmid: str | None
    profile: Profile
    last_ticket_id: str | None = None  # the conversation before, once closed (its transcript can still be mailed)
    last_trace_id: str | None = None


@dataclass(frozen=True)
class MessageRecord:
    visitor_id: str
    client_message_id: str
    event_type: str
    body: dict[str, Any]
    published: bool
    seq: int = 0  # transcript position once published

    @property
    def ticket_id(self) -> str:
        return self.body["ticket_id"]


@dataclass(frozen=True)
class TicketState:
    seq: int = 0
    delivered: int = 0
    emailed: int = 0
    last_agent: int = 0
    subject: str = ""


@dataclass(frozen=True)
class Upload:
    upload_id: str
    sha256: str
    filename: str
    content_type: str
    size: int

    def attachment(self) -> dict[str, Any]:
        """The ``shared.events.Attachment`` fields."""
        return {"filename": self.filename, "content_type": self.content_type, "size": self.size,
                "sha256": self.sha256, "stored": True}


class ChatStore:
    PREFIX = "tm:intake_chat:"

    def __init__(self, client: redis.asyncio.Redis):
        self._client = client
        self._mark_published = client.register_script(_MARK_PUBLISHED)
        self._append_reply = client.register_script(_APPEND_REPLY)
        self._close = client.register_script(_CLOSE)
        self._create_message = client.register_script(_CREATE_MESSAGE)
        self._raise = client.register_script(_RAISE)
        self._claim_missed = client.register_script(_CLAIM_MISSED)
        self._finish_missed = client.register_script(_FINISH_MISSED)
        self._count = client.register_script(_COUNT)
        self._arrival = client.register_script(_ARRIVAL)
        self._open_conversation = client.register_script(_OPEN_CONVERSATION)

    def _visitor_key(self, visitor_id: str) -> str:
        return f"{self.PREFIX}visitor:{visitor_id}"

    def _ticket_key(self, ticket_id: str) -> str:
        return f"{self.PREFIX}ticket:{ticket_id}"

    def _message_key(self, visitor_id: str, client_message_id: str) -> str:
        return f"{self.PREFIX}msg:{visitor_id}:{client_message_id}"

    def _transcript_key(self, ticket_id: str) -> str:
        return f"{self.PREFIX}transcript:{ticket_id}"

    def _state_key(self, ticket_id: str) -> str:
        return f"{self.PREFIX}state:{ticket_id}"

    def _reply_key(self, reply_id: str) -> str:
        return f"{self.PREFIX}reply:{reply_id}"

    def _upload_key(self, visitor_id: str, upload_id: str) -> str:
        return f"{self.PREFIX}upload:{visitor_id}:{upload_id}"

    @property
    def _missed_key(self) -> str:
        return f"{self.PREFIX}missed"

    # --- visitors and conversations ----------------------------------------------------------

    async def visitor(self, visitor_id: str) -> Visitor:
        return self._as_visitor(visitor_id, await self._client.hgetall(self._visitor_key(visitor_id)))

    async def arrival(self, visitor_id: str, client_message_id: str,
                      profile: Profile | None) -> tuple[Visitor, MessageRecord | None]:
        """What a message arriving needs, in one round trip (one script: one command to encode
        and one reply to parse, where a pipeline has four or six): store the profile it tells
        (as ``remember_profile``), then read the visitor and the record of this client message id."""
        args: list[Any] = [VISITOR_TTL_SECONDS]
        for name, value in (self._given(profile) if profile is not None else {}).items():
            args += [name, value]
        message, visitor = await self._arrival(
            keys=[self._visitor_key(visitor_id), self._message_key(visitor_id, client_message_id)], args=args)
        return (self._as_visitor(visitor_id, _pairs(visitor)),
                self._as_message(visitor_id, client_message_id, _pairs(message)))

    @staticmethod
    def _as_visitor(visitor_id: str, data: dict[str, str]) -> Visitor:
        return Visitor(
            visitor_id=visitor_id,
            conversation=int(data.get("conversation", 0)),
            ticket_id=data.get("ticket_id") or None,
            trace_id=data.get("trace_id") or None,
            opening_cmid=data.get("opening_cmid") or None,
            profile=Profile(**{f: data.get(f, "") for f in _PROFILE_FIELDS}),
            last_ticket_id=data.get("last_ticket_id") or None,
            last_trace_id=data.get("last_trace_id") or None,
        )

    async def remember_profile(self, visitor_id: str, profile: Profile) -> None:
        """Store what the visitor told us; fields they left empty keep what we knew.

        A hello that tells nothing writes nothing, so page views alone do not fill Redis.
        """
        given = self._given(profile)
        if not given:
            return
        key = self._visitor_key(visitor_id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=given)
            pipe.expire(key, VISITOR_TTL_SECONDS)
            await pipe.execute()

    @staticmethod
    def _given(profile: Profile) -> dict[str, str]:
        return {f: getattr(profile, f) for f in _PROFILE_FIELDS if getattr(profile, f)}

    async def open_conversation(self, record: MessageRecord, trace_id: str) -> None:
        """Make ``record``'s ticket the visitor's open one, with ``record`` as its opening message."""
        args: list[Any] = [record.ticket_id, trace_id, record.client_message_id, record.visitor_id,
                           record.body.get("subject", ""), VISITOR_TTL_SECONDS, TICKET_TTL_SECONDS,
                           TRANSCRIPT_TTL_SECONDS, MESSAGE_DEDUPE_TTL_SECONDS]
        for name, value in self._message_fields(record).items():
            args += [name, value]
        await self._open_conversation(
            keys=[self._visitor_key(record.visitor_id), self._ticket_key(record.ticket_id),
                  self._state_key(record.ticket_id), self._message_key(record.visitor_id, record.client_message_id)],
            args=args)

    @staticmethod
    def _message_fields(record: MessageRecord) -> dict[str, str]:
        return {"event_type": record.event_type, "body": json.dumps(record.body, ensure_ascii=False),
                "published": "1" if record.published else "0"}

    async def add_message(self, record: MessageRecord) -> MessageRecord:
        """Store the record unless one exists for this client message id; return the stored one."""
        fields = self._message_fields(record)
        args: list[Any] = [MESSAGE_DEDUPE_TTL_SECONDS]
        for name, value in fields.items():
            args += [name, value]
        created = await self._create_message(keys=[self._message_key(record.visitor_id, record.client_message_id)], args=args)
        if created:
            return record
        existing = await self.message(record.visitor_id, record.client_message_id)
        assert existing is not None
        return existing

    async def message(self, visitor_id: str, client_message_id: str) -> MessageRecord | None:
        return self._as_message(visitor_id, client_message_id,
                                await self._client.hgetall(self._message_key(visitor_id, client_message_id)))

    @staticmethod
    def _as_message(visitor_id: str, client_message_id: str, data: dict[str, str]) -> MessageRecord | None:
        if not data:
            return None
        return MessageRecord(visitor_id, client_message_id, data["event_type"], json.loads(data["body"]),
                             data.get("published") == "1", int(data.get("seq") or 0))

    async def mark_published(self, record: MessageRecord, entry: dict[str, Any], *,
                             along: Callable[[Pipeline], Awaitable[Any]] | None = None) -> tuple[bool, int]:
        """Record the broker's confirm and add the message to the transcript, once:
        (whether this call did it, the message's transcript position). ``along`` queues writes
        of another owner's keys that go with it (the intake ledger's mark) on the same round trip."""
        keys = [self._message_key(record.visitor_id, record.client_message_id),
                self._transcript_key(record.ticket_id), self._state_key(record.ticket_id)]
        args = [json.dumps(entry, ensure_ascii=False), TRANSCRIPT_MAX_ENTRIES, TRANSCRIPT_TTL_SECONDS]

        async def send() -> list[Any]:
            async with self._client.pipeline(transaction=False) as pipe:
                # By its sha, not through the Script: in a pipeline that first asks SCRIPT EXISTS, a round trip.
                pipe.evalsha(self._mark_published.sha, len(keys), *keys, *args)
                if along is not None:
                    await along(pipe)
                return await pipe.execute()

        try:
            results = await send()
        except NoScriptError:  # Redis restarted or its scripts were flushed; both writes are idempotent
            await self._client.script_load(_MARK_PUBLISHED)
            results = await send()
        created, seq = results[0]
        return bool(created), int(seq)

    async def add_agent_reply(self, ticket_id: str, reply_id: str, entry: dict[str, Any], *,
                              look_at: float) -> tuple[bool, int]:
        """Append an agent's reply to the transcript unless this reply id is already there:
        (appended by this call, its position). A first append also schedules, at ``look_at``,
        the look whether a widget received it (else it is mailed)."""
        created, seq = await self._append_reply(
            keys=[self._reply_key(reply_id), self._transcript_key(ticket_id), self._state_key(ticket_id),
                  self._missed_key],
            args=[json.dumps(entry, ensure_ascii=False), TRANSCRIPT_MAX_ENTRIES, TRANSCRIPT_TTL_SECONDS,
                  REPLY_MARKER_TTL_SECONDS, ticket_id, repr(look_at)],
        )
        return bool(created), int(seq)

    async def transcript(self, ticket_id: str, since: int = 0) -> list[dict[str, Any]]:
        """The transcript's entries after position ``since`` (all of them for 0), oldest first."""
        entries = [json.loads(item) for item in await self._client.lrange(self._transcript_key(ticket_id), 0, -1)]
        return [e for e in entries if int(e.get("seq", 0)) > since]

    async def ticket_state(self, ticket_id: str) -> TicketState:
        data = await self._client.hgetall(self._state_key(ticket_id))
        return TicketState(seq=int(data.get("seq") or 0), delivered=int(data.get("delivered") or 0),
                           emailed=int(data.get("emailed") or 0), last_agent=int(data.get("last_agent") or 0),
                           subject=data.get("subject", ""))

    async def mark_delivered(self, ticket_id: str, seq: int) -> bool:
        """A widget holds the transcript up to ``seq``: agent replies up to it are not mailed."""
        return bool(await self._raise(keys=[self._state_key(ticket_id)], args=["delivered", seq]))

    async def mark_emailed(self, ticket_id: str, seq: int) -> bool:
        return bool(await self._raise(keys=[self._state_key(ticket_id)], args=["emailed", seq]))

    async def visitor_of_ticket(self, ticket_id: str) -> str | None:
        return await self._client.get(self._ticket_key(ticket_id))

    async def close_conversation(self, ticket_id: str) -> bool:
        """The ticket was resolved: the visitor's next message opens a new ticket."""
        visitor_id = await self.visitor_of_ticket(ticket_id)
        if visitor_id is None:
            return False
        trace_id = await self._client.hget(self._visitor_key(visitor_id), "trace_id") or ""
        return bool(await self._close(keys=[self._visitor_key(visitor_id)], args=[ticket_id, trace_id]))

    # --- missed agent replies ----------------------------------------------------------------

    async def claim_missed(self, now: float, limit: int = 20) -> list[str]:
        """Tickets whose look is due, each claimed for ``MISSED_CLAIM_SECONDS``."""
        return list(await self._claim_missed(keys=[self._missed_key],
                                             args=[repr(now), repr(now + MISSED_CLAIM_SECONDS), limit]))

    async def finish_missed(self, ticket_id: str, looked_up_to: int, next_look: float) -> None:
        await self._finish_missed(keys=[self._missed_key, self._state_key(ticket_id)],
                                  args=[ticket_id, looked_up_to, repr(next_look)])

    async def missed_due(self) -> list[tuple[str, float]]:
        return [(t, s) for t, s in await self._client.zrange(self._missed_key, 0, -1, withscores=True)]

    # --- uploads -----------------------------------------------------------------------------

    async def add_upload(self, visitor_id: str, upload: Upload) -> None:
        key = self._upload_key(visitor_id, upload.upload_id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"sha256": upload.sha256, "filename": upload.filename,
                                    "content_type": upload.content_type, "size": str(upload.size)})
            pipe.expire(key, UPLOAD_TTL_SECONDS)
            await pipe.execute()

    async def upload(self, visitor_id: str, upload_id: str) -> Upload | None:
        data = await self._client.hgetall(self._upload_key(visitor_id, upload_id))
        if not data:
            return None
        return Upload(upload_id, data["sha256"], data["filename"], data["content_type"], int(data["size"]))

    # --- abuse limits and typing -------------------------------------------------------------

    async def count(self, limit_name: str, subject: str, window_seconds: int, now: float) -> int:
        """How many times ``subject`` used ``limit_name`` in the current fixed window, this one included."""
        window = int(now // window_seconds)
        key = f"{self.PREFIX}rate:{limit_name}:{subject}:{window}"
        return int(await self._count(keys=[key], args=[window_seconds + 1]))

    async def typing_window_open(self, ticket_id: str) -> bool:
        """True once per ``TYPING_WINDOW_SECONDS`` per ticket: whether to announce typing now."""
        return bool(await self._client.set(f"{self.PREFIX}typing:{ticket_id}", "1", nx=True,
                                           ex=TYPING_WINDOW_SECONDS))
