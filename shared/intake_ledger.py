"""Ticket numbers and exactly-once intake, shared by the three intake services.

An intake turns one contact (an email, a chat session, a call) into one ticket. The contact's
natural key (Message-ID hash, chat session id, call id) is claimed together with a fresh ticket
number in one Lua script, so a retried or redelivered contact gets the *same* ticket id and a
republished ``ticket_received`` carries the same ``event_id`` (see :func:`stable_event_id`):
consumers dedupe on it, and nothing is ticketed twice.

Keys (this module is their only owner):
- ``tm:ticket_seq`` – counter behind ``TM-<n>`` numbers (never expires);
- ``tm:intake:<service>:<kind>:<natural key>`` – ticket id for a contact (``CONTACT_TTL``);
- ``tm:intake:<service>:published:<ticket id>`` – set once the ticket_received was confirmed.
"""
from __future__ import annotations

import hashlib
import uuid

import redis
import redis.asyncio

TICKET_PREFIX = "TM-"
TICKET_NUMBER_BASE = 10000
CONTACT_TTL_SECONDS = 90 * 24 * 3600  # longer than any redelivery or backfill window

_SEQ_KEY = "tm:ticket_seq"
_CLAIM = """
local existing = redis.call('GET', KEYS[1])
if existing then return {existing, 0} end
local n = redis.call('INCR', KEYS[2])
local id = ARGV[1] .. tostring(tonumber(ARGV[2]) + n)
redis.call('SET', KEYS[1], id, 'EX', tonumber(ARGV[3]))
return {id, 1}
"""


def stable_event_id(*parts: str) -> str:
    """Same inputs, same id: a republished event is recognisably the same event."""
    return uuid.uuid5(uuid.NAMESPACE_URL, "ticketmesh:" + ":".join(parts)).hex


def natural_key_hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class _Keys:
    def __init__(self, service: str):
        self.service = service

    def contact(self, kind: str, natural_key: str) -> str:
        return f"tm:intake:{self.service}:{kind}:{natural_key}"

    def published(self, ticket_id: str) -> str:
        return f"tm:intake:{self.service}:published:{ticket_id}"


class IntakeLedger:
    """Blocking client version (nameko services)."""

    def __init__(self, client: redis.Redis, service: str):
        self._client = client
        self._keys = _Keys(service)
        self._claim = client.register_script(_CLAIM)

    def claim_ticket(self, kind: str, natural_key: str) -> tuple[str, bool]:
        """Return ``(ticket_id, is_new)`` for the contact, allocating a number the first time."""
        ticket_id, created = self._claim(
            keys=[self._keys.contact(kind, natural_key), _SEQ_KEY],
            args=[TICKET_PREFIX, TICKET_NUMBER_BASE, CONTACT_TTL_SECONDS],
        )
        return ticket_id, bool(created)

    def ticket_for(self, kind: str, natural_key: str) -> str | None:
        return self._client.get(self._keys.contact(kind, natural_key))

    def contact_keys(self, kind: str, natural_keys: list[str]) -> list[str]:
        """The ledger's keys for these contacts, for a caller batching its reads (MGET)."""
        return [self._keys.contact(kind, key) for key in natural_keys]

    def mark_published(self, ticket_id: str) -> None:
        self._client.set(self._keys.published(ticket_id), "1", ex=CONTACT_TTL_SECONDS)

    def is_published(self, ticket_id: str) -> bool:
        return bool(self._client.exists(self._keys.published(ticket_id)))


class AsyncIntakeLedger:
    """asyncio version (intake_chat, intake_phone); same keys, same script."""

    def __init__(self, client: redis.asyncio.Redis, service: str):
        self._client = client
        self._keys = _Keys(service)
        self._claim = client.register_script(_CLAIM)

    async def claim_ticket(self, kind: str, natural_key: str) -> tuple[str, bool]:
        ticket_id, created = await self._claim(
            keys=[self._keys.contact(kind, natural_key), _SEQ_KEY],
            args=[TICKET_PREFIX, TICKET_NUMBER_BASE, CONTACT_TTL_SECONDS],
        )
        return ticket_id, bool(created)

    async def ticket_for(self, kind: str, natural_key: str) -> str | None:
        return await self._client.get(self._keys.contact(kind, natural_key))

    async def mark_published(self, ticket_id: str) -> None:
        await self._client.set(self._keys.published(ticket_id), "1", ex=CONTACT_TTL_SECONDS)

    async def is_published(self, ticket_id: str) -> bool:
        return bool(await self._client.exists(self._keys.published(ticket_id)))
