"""intake_chat's Redis keys (all ``tm:intake_chat:``), behind domain verbs.

- ``visitor:<visitor_id>`` hash: ``conversation`` (counter; with the visitor id it is the natural
  key of a conversation in the intake ledger), the open ``ticket_id`` with its ``trace_id`` and
  ``opening_cmid``, and the profile (``name``, ``email``, ``phone``, ``language``);
- ``ticket:<ticket_id>`` string: the visitor id of that ticket (to route agent replies);
- ``msg:<visitor_id>:<client_message_id>`` hash: the event built for the message (``event_type``,
  ``body``), its ``ticket_id`` and whether the broker confirmed it (``published``): the dedupe
  record that makes a resent message answer with the same ids and never publish twice;
- ``transcript:<ticket_id>`` list of JSON entries, capped at ``TRANSCRIPT_MAX_ENTRIES``;
- ``reply:<reply_id>`` marker: this agent reply is already in the transcript.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis.asyncio

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

_PROFILE_FIELDS = ("name", "email", "phone", "language")

# KEYS: msg, transcript; ARGV: entry JSON, max entries, transcript ttl. Returns 1 on the transition.
_MARK_PUBLISHED = """
if redis.call('HGET', KEYS[1], 'published') ~= '0' then return 0 end
redis.call('HSET', KEYS[1], 'published', '1')
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
return 1
"""

# KEYS: reply marker, transcript; ARGV: entry JSON, max entries, transcript ttl, marker ttl.
_APPEND_REPLY = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[4])) then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
return 1
"""

# KEYS: visitor; ARGV: ticket id. Closes the visitor's conversation if this ticket is still the
# open one (a late or repeated resolution changes nothing).
_CLOSE = """
if redis.call('HGET', KEYS[1], 'ticket_id') ~= ARGV[1] then return 0 end
redis.call('HINCRBY', KEYS[1], 'conversation', 1)
redis.call('HDEL', KEYS[1], 'ticket_id', 'trace_id', 'opening_cmid')
return 1
"""

# KEYS: msg; ARGV: ttl, then field/value pairs. Creates the record unless it exists.
_CREATE_MESSAGE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
"""


@dataclass(frozen=True)
class Visitor:
    visitor_id: str
    conversation: int
    ticket_id: str | None
    trace_id: str | None
    opening_cmid: str | None
    profile: Profile


@dataclass(frozen=True)
class MessageRecord:
    visitor_id: str
    client_message_id: str
    event_type: str
    body: dict[str, Any]
    published: bool

    @property
    def ticket_id(self) -> str:
        return self.body["ticket_id"]


class ChatStore:
    PREFIX = "tm:intake_chat:"

    def __init__(self, client: redis.asyncio.Redis):
        self._client = client
        self._mark_published = client.register_script(_MARK_PUBLISHED)
        self._append_reply = client.register_script(_APPEND_REPLY)
        self._close = client.register_script(_CLOSE)
        self._create_message = client.register_script(_CREATE_MESSAGE)

    def _visitor_key(self, visitor_id: str) -> str:
        return f"{self.PREFIX}visitor:{visitor_id}"

    def _ticket_key(self, ticket_id: str) -> str:
        return f"{self.PREFIX}ticket:{ticket_id}"

    def _message_key(self, visitor_id: str, client_message_id: str) -> str:
        return f"{self.PREFIX}msg:{visitor_id}:{client_message_id}"

    def _transcript_key(self, ticket_id: str) -> str:
        return f"{self.PREFIX}transcript:{ticket_id}"

    def _reply_key(self, reply_id: str) -> str:
        return f"{self.PREFIX}reply:{reply_id}"

    async def visitor(self, visitor_id: str) -> Visitor:
        return self._visitor_of(visitor_id, await self._client.hgetall(self._visitor_key(visitor_id)))

    async def arrival(self, visitor_id: str, client_message_id: str,
                      profile: Profile | None) -> tuple[MessageRecord | None, Visitor]:
        """What a visitor's message meets, in one round trip: remember the profile they gave
        (as :meth:`remember_profile`), then read the message if it came before (a resend) and
        the visitor."""
        given = self._given(profile) if profile is not None else {}
        key = self._visitor_key(visitor_id)
        async with self._client.pipeline(transaction=True) as pipe:
            if given:
                pipe.hset(key, mapping=given)
                pipe.expire(key, VISITOR_TTL_SECONDS)
            pipe.hgetall(self._message_key(visitor_id, client_message_id))
            pipe.hgetall(key)
            *_, message, visitor = await pipe.execute()
        return self._record_of(visitor_id, client_message_id, message), self._visitor_of(visitor_id, visitor)

    @staticmethod
    def _given(profile: Profile) -> dict[str, str]:
        return {f: getattr(profile, f) for f in _PROFILE_FIELDS if getattr(profile, f)}

    @staticmethod
    def _visitor_of(visitor_id: str, data: dict[str, str]) -> Visitor:
        return Visitor(
            visitor_id=visitor_id,
            conversation=int(data.get("conversation", 0)),
            ticket_id=data.get("ticket_id") or None,
            trace_id=data.get("trace_id") or None,
            opening_cmid=data.get("opening_cmid") or None,
            profile=Profile(**{f: data.get(f, "") for f in _PROFILE_FIELDS}),
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

    async def open_conversation(self, record: MessageRecord, trace_id: str) -> None:
        """Make ``record``'s ticket the visitor's open one, with ``record`` as its opening message."""
        vkey = self._visitor_key(record.visitor_id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(vkey, mapping={"ticket_id": record.ticket_id, "trace_id": trace_id,
                                     "opening_cmid": record.client_message_id})
            pipe.expire(vkey, VISITOR_TTL_SECONDS)
            pipe.set(self._ticket_key(record.ticket_id), record.visitor_id, ex=TICKET_TTL_SECONDS)
            pipe.hset(self._message_key(record.visitor_id, record.client_message_id), mapping=self._message_fields(record))
            pipe.expire(self._message_key(record.visitor_id, record.client_message_id), MESSAGE_DEDUPE_TTL_SECONDS)
            await pipe.execute()

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
        return self._record_of(visitor_id, client_message_id,
                               await self._client.hgetall(self._message_key(visitor_id, client_message_id)))

    @staticmethod
    def _record_of(visitor_id: str, client_message_id: str, data: dict[str, str]) -> MessageRecord | None:
        if not data:
            return None
        return MessageRecord(visitor_id, client_message_id, data["event_type"], json.loads(data["body"]),
                             data.get("published") == "1")

    async def mark_published(self, record: MessageRecord, entry: dict[str, Any]) -> bool:
        """Record the broker's confirm and add the message to the transcript, once."""
        return bool(await self._mark_published(
            keys=[self._message_key(record.visitor_id, record.client_message_id), self._transcript_key(record.ticket_id)],
            args=[json.dumps(entry, ensure_ascii=False), TRANSCRIPT_MAX_ENTRIES, TRANSCRIPT_TTL_SECONDS],
        ))

    async def add_agent_reply(self, ticket_id: str, reply_id: str, entry: dict[str, Any]) -> bool:
        """Append an agent's reply to the transcript unless this reply id is already there."""
        return bool(await self._append_reply(
            keys=[self._reply_key(reply_id), self._transcript_key(ticket_id)],
            args=[json.dumps(entry, ensure_ascii=False), TRANSCRIPT_MAX_ENTRIES, TRANSCRIPT_TTL_SECONDS,
                  REPLY_MARKER_TTL_SECONDS],
        ))

    async def transcript(self, ticket_id: str) -> list[dict[str, Any]]:
        return [json.loads(item) for item in await self._client.lrange(self._transcript_key(ticket_id), 0, -1)]

    async def visitor_of_ticket(self, ticket_id: str) -> str | None:
        return await self._client.get(self._ticket_key(ticket_id))

    async def close_conversation(self, ticket_id: str) -> bool:
        """The ticket was resolved: the visitor's next message opens a new ticket."""
        visitor_id = await self.visitor_of_ticket(ticket_id)
        if visitor_id is None:
            return False
        return bool(await self._close(keys=[self._visitor_key(visitor_id)], args=[ticket_id]))
