"""The notifier's Redis state (keys ``tm:notifier:*``; this class is their only owner).

The outbox (each mail, its delivery state and schedule, the loop-protection counters) has
keys of its own, owned by :class:`services.notifier.outbox.Outbox`.

- ``tm:notifier:thread:<ticket id>`` – hash of what we know of the ticket's mail conversation
  (subject, the customer's Message-ID, our ack's and our last reply's), to thread replies.
- ``tm:notifier:recipients:<ticket id>`` – set of the addresses we mailed about the ticket
  (recorded before each send, ``THREAD_TTL_SECONDS`` after the last): only a bounce for one of
  them suppresses anything.
- ``tm:notifier:bounced:<address>`` – the address is suppressed (no mail at all): ``hard``
  for ``HARD_BOUNCE_SUPPRESS_SECONDS`` after a permanent bounce (60 days, as Zammad),
  ``refused`` for as long after our relay refused the mailbox (5xx to RCPT), ``soft`` for
  ``SOFT_BOUNCE_SUPPRESS_SECONDS`` after ``SOFT_BOUNCE_LIMIT`` transient ones. The TTL is the
  suppression: when it runs out, mail is tried again.
- ``tm:notifier:soft_bounces:<address>`` – sorted set of transient-bounce event ids scored by
  when they arrived, trimmed to ``SOFT_BOUNCE_WINDOW_SECONDS``: the same bounce delivered
  twice counts once.

Addresses in keys are lowercased.
"""
from __future__ import annotations

import redis.asyncio

from services.notifier.messages import Thread

# Customers answer old tickets; keep threading data for half a year after the last change.
THREAD_TTL_SECONDS = 180 * 24 * 3600

# Bounces: a permanent failure stops mail to the address for 60 days; three transient ones
# within 72 hours (a full mailbox, a greylisting server that never lets us in) for a day.
HARD_BOUNCE_SUPPRESS_SECONDS = 60 * 24 * 3600
SOFT_BOUNCE_LIMIT = 3
SOFT_BOUNCE_WINDOW_SECONDS = 72 * 3600
SOFT_BOUNCE_SUPPRESS_SECONDS = 24 * 3600
HARD = "hard"
REFUSED = "refused"
SOFT = "soft"

# KEYS: soft_bounces, bounced; ARGV: event id, now (s), window, limit, suppress seconds.
_SOFT_BOUNCE = """
redis.call('ZADD', KEYS[1], tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[3]))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
local count = redis.call('ZCARD', KEYS[1])
local current = redis.call('GET', KEYS[2])
if count >= tonumber(ARGV[4]) and (not current or current == 'soft') then
  redis.call('SET', KEYS[2], 'soft', 'EX', tonumber(ARGV[5]))
end
return count
"""
# KEYS: bounced; ARGV: refused, seconds
_MARK_REFUSED = """
if redis.call('GET', KEYS[1]) == 'hard' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
return 1
"""
_LIFT_REFUSAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class NotificationStore:
    def __init__(self, client: redis.asyncio.Redis):
        self._client = client
        self._soft_bounce = client.register_script(_SOFT_BOUNCE)
        self._mark_refused = client.register_script(_MARK_REFUSED)
        self._lift_refusal = client.register_script(_LIFT_REFUSAL)

    @staticmethod
    def _thread_key(ticket_id: str) -> str:
        return f"tm:notifier:thread:{ticket_id}"

    # -- bounced addresses -------------------------------------------------------------------

    @staticmethod
    def _bounced_key(address: str) -> str:
        return f"tm:notifier:bounced:{address.strip().lower()}"

    async def mark_hard_bounced(self, address: str) -> None:
        """Suppress the address for the full period (again from now, if it bounces again)."""
        await self._client.set(self._bounced_key(address), HARD, ex=HARD_BOUNCE_SUPPRESS_SECONDS)

    async def record_soft_bounce(self, address: str, bounce_id: str, at_seconds: float) -> int:
        """Count a transient bounce (once per ``bounce_id``); at the limit within the window the
        address is suppressed for a while. Returns the bounces in the window."""
        key = f"tm:notifier:soft_bounces:{address.strip().lower()}"
        return int(await self._soft_bounce(
            keys=[key, self._bounced_key(address)],
            args=[bounce_id, at_seconds, SOFT_BOUNCE_WINDOW_SECONDS, SOFT_BOUNCE_LIMIT, SOFT_BOUNCE_SUPPRESS_SECONDS]))

    async def mark_refused(self, address: str) -> None:
        """Our relay refused the mailbox for good (5xx to RCPT): suppressed as long as after a
        hard bounce, unless a hard bounce is recorded already (it says more)."""
        await self._mark_refused(keys=[self._bounced_key(address)], args=[REFUSED, HARD_BOUNCE_SUPPRESS_SECONDS])

    async def lift_refusal(self, address: str) -> bool:
        """Undo :meth:`mark_refused` (an operator replays the mail, e.g. after fixing the relay);
        a bounce's suppression stays. True if one was lifted."""
        return bool(await self._lift_refusal(keys=[self._bounced_key(address)], args=[REFUSED]))

    async def suppression(self, address: str) -> tuple[str, int] | None:
        """``(hard|refused|soft, seconds left)`` while the address is suppressed."""
        key = self._bounced_key(address)
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.ttl(key)
            kind, ttl = await pipe.execute()
        return (kind, ttl) if kind else None

    async def is_bounced(self, address: str) -> bool:
        return bool(await self._client.exists(self._bounced_key(address)))

    # -- who we mailed about a ticket ----------------------------------------------------------

    @staticmethod
    def _recipients_key(ticket_id: str) -> str:
        return f"tm:notifier:recipients:{ticket_id}"

    async def remember_recipient(self, ticket_id: str, address: str) -> None:
        key = self._recipients_key(ticket_id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.sadd(key, address.strip().lower())
            pipe.expire(key, THREAD_TTL_SECONDS)
            await pipe.execute()

    async def mailed_about(self, ticket_id: str, addresses: list[str]) -> set[str]:
        """Which of ``addresses`` (lowercased) we mailed about ``ticket_id``."""
        wanted = [a.strip().lower() for a in addresses]
        if not wanted:
            return set()
        found = await self._client.smismember(self._recipients_key(ticket_id), wanted)
        return {a for a, hit in zip(wanted, found) if hit}

    async def thread(self, ticket_id: str) -> Thread:
        fields = await self._client.hgetall(self._thread_key(ticket_id))
        return Thread(
            subject=fields.get("subject", ""),
            customer_message_id=fields.get("customer_message_id") or None,
            ack_message_id=fields.get("ack_message_id") or None,
            last_reply_message_id=fields.get("last_reply_message_id") or None,
        )

    async def remember_ticket(self, ticket_id: str, *, subject: str, customer_message_id: str | None) -> None:
        fields = {"subject": subject}
        if customer_message_id:
            fields["customer_message_id"] = customer_message_id
        await self._update_thread(ticket_id, fields)

    async def remember_ack(self, ticket_id: str, message_id: str) -> None:
        await self._update_thread(ticket_id, {"ack_message_id": message_id})

    async def remember_reply(self, ticket_id: str, message_id: str) -> None:
        await self._update_thread(ticket_id, {"last_reply_message_id": message_id})

    async def _update_thread(self, ticket_id: str, fields: dict[str, str]) -> None:
        key = self._thread_key(ticket_id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            pipe.expire(key, THREAD_TTL_SECONDS)
            await pipe.execute()
