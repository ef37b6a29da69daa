"""What the notifier knows about who to tell, in Redis (keys ``tm:notifier:*``; this class is
their only owner). Kept apart from ``store.py`` (the send path's claims, threads and bounces).

- ``tm:notifier:contact:<ticket id>`` – hash: the customer of a ticket as ``ticket_received``
  named them (channel, email, name, locale, subject, the customer's Message-ID, the event id
  and trace id, received_at), the classification once ``ticket_classified`` came (priority,
  customer_tier, classified_received_at; email tickets only, no other is acknowledged),
  ``acked`` once the acknowledgement went out and ``csat`` once the customer answered the
  survey. Later events (status changed, resolved) do not carry the customer, so mail to them
  is written from this. ``CONTACT_TTL_SECONDS`` after the last change.
- ``tm:notifier:ack_due`` – sorted set of ticket ids whose acknowledgement waits for the
  classification, scored by when to stop waiting and acknowledge without an expected time.
  A sweeper leases due entries (moves their score ``ACK_LEASE_SECONDS`` ahead) and removes
  them once the ack went out, so a sweeper that dies mid-way leaves them for the next one.
- ``tm:notifier:presence:<agent id>`` – hash: the agent's presence and the time of the
  ``agent_presence_changed`` it came from; an older event never overwrites a newer one.
- ``tm:notifier:robot:<notification id>`` – how far one group chat robot message got
  (``sending`` while claimed, then ``sent``): a redelivered event posts nothing twice.
- ``tm:notifier:robot_rate:<robot>:<minute>`` – messages posted to a robot in one minute,
  to stay under the vendors' limits (DingTalk and WeCom: 20 a minute).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import redis.asyncio

from services.notifier.messages import Contact

CONTACT_TTL_SECONDS = 180 * 24 * 3600  # customers answer old tickets; as long as the mail threads
ACK_LEASE_SECONDS = 120  # longer than one SMTP attempt: a live sweeper keeps its lease
PRESENCE_TTL_SECONDS = 30 * 24 * 3600  # an agent silent for a month counts as unknown (offline)
ROBOT_SENDING_TTL_SECONDS = 60  # longer than one webhook call with its timeout
ROBOT_SENT_TTL_SECONDS = 30 * 24 * 3600
ROBOT_RATE_WINDOW_SECONDS = 60

SENDING = "sending"
SENT = "sent"
CLAIMED = "claimed"

_CLASSIFICATION_FIELDS = ("priority", "customer_tier", "classified_received_at")

# KEYS: presence hash; ARGV: presence, at (epoch s), ttl. Only a newer event changes it.
_SET_PRESENCE = """
local at = tonumber(redis.call('HGET', KEYS[1], 'at') or '-1')
if tonumber(ARGV[2]) < at then return 0 end
redis.call('HSET', KEYS[1], 'presence', ARGV[1], 'at', ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""
# KEYS: ack_due; ARGV: now, lease seconds, max. Due entries are leased, not popped.
_LEASE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), member)
end
return due
"""
_CLAIM = """
local state = redis.call('GET', KEYS[1])
if state then return state end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
return ARGV[3]
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: counter; ARGV: limit, window. 1 if one more message fits in this window.
_TAKE_RATE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used >= tonumber(ARGV[1]) then return 0 end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""


@dataclass(frozen=True)
class Classification:
    priority: str
    customer_tier: str
    received_at: datetime


@dataclass(frozen=True)
class ContactRecord:
    """A ticket's contact hash, read back."""

    contact: Contact
    received_event_id: str
    trace_id: str
    received_at: datetime
    classification: Classification | None
    acked: bool
    csat_answered: bool


def _record(ticket_id: str, fields: dict[str, str]) -> ContactRecord | None:
    if "channel" not in fields:  # only the classification (or a survey answer) arrived so far
        return None
    contact = Contact(
        ticket_id=ticket_id, channel=fields["channel"], email=fields.get("email") or None,
        name=fields.get("name", ""), locale=fields.get("locale", "zh-CN"), subject=fields.get("subject", ""),
        customer_message_id=fields.get("customer_message_id") or None,
    )
    return ContactRecord(
        contact=contact, received_event_id=fields.get("received_event_id", ""), trace_id=fields.get("trace_id", ""),
        received_at=datetime.fromisoformat(fields["received_at"]), classification=_classification(fields),
        acked=fields.get("acked") == "1", csat_answered=fields.get("csat") == "answered",
    )


def _classification(fields: dict[str, str]) -> Classification | None:
    if not fields.get("priority"):
        return None
    return Classification(priority=fields["priority"], customer_tier=fields.get("customer_tier") or "standard",
                          received_at=datetime.fromisoformat(fields["classified_received_at"]))


class AudienceStore:
    def __init__(self, client: redis.asyncio.Redis):
        self._client = client
        self._set_presence = client.register_script(_SET_PRESENCE)
        self._lease_due = client.register_script(_LEASE_DUE)
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)
        self._take_rate = client.register_script(_TAKE_RATE)

    # -- customers -----------------------------------------------------------------------------

    @staticmethod
    def _contact_key(ticket_id: str) -> str:
        return f"tm:notifier:contact:{ticket_id}"

    async def save_contact(self, contact: Contact, *, received_event_id: str, trace_id: str,
                           received_at: datetime, classification: bool = True) -> Classification | None:
        """Keep the customer of a new ticket; returns the classification if it came first
        (``classification=False``: not wanted, None; for tickets never acknowledged)."""
        fields = {"channel": contact.channel, "email": contact.email or "", "name": contact.name,
                  "locale": contact.locale, "subject": contact.subject,
                  "customer_message_id": contact.customer_message_id or "", "received_event_id": received_event_id,
                  "trace_id": trace_id, "received_at": received_at.isoformat()}
        key = self._contact_key(contact.ticket_id)
        if not classification:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.hset(key, mapping=fields)
                pipe.expire(key, CONTACT_TTL_SECONDS)
                await pipe.execute()
            return None
        # One transaction: the classification handler writes then reads the same hash, so one
        # of the two always sees the other's half (see Notifier.ack_ticket_received).
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            pipe.expire(key, CONTACT_TTL_SECONDS)
            pipe.hmget(key, list(_CLASSIFICATION_FIELDS))
            _, _, found = await pipe.execute()
        return _classification(dict(zip(_CLASSIFICATION_FIELDS, [v or "" for v in found])))

    async def save_classification(self, ticket_id: str, classification: Classification) -> ContactRecord | None:
        """Keep the classification; returns the contact if ``ticket_received`` came first."""
        key = self._contact_key(ticket_id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"priority": classification.priority,
                                    "customer_tier": classification.customer_tier,
                                    "classified_received_at": classification.received_at.isoformat()})
            pipe.expire(key, CONTACT_TTL_SECONDS)
            pipe.hgetall(key)
            _, _, fields = await pipe.execute()
        return _record(ticket_id, fields)

    async def contact(self, ticket_id: str) -> ContactRecord | None:
        return _record(ticket_id, await self._client.hgetall(self._contact_key(ticket_id)))

    async def mark_acked(self, ticket_id: str) -> None:
        await self._client.hset(self._contact_key(ticket_id), "acked", "1")
        await self._client.zrem(self._ack_due_key(), ticket_id)

    async def skip_ack(self, ticket_id: str) -> None:
        """No acknowledgement for this ticket (it joined another); works before or after its
        ``ticket_received`` is handled: either finds ``acked`` set."""
        key = self._contact_key(ticket_id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"acked": "1", "ack_skipped": "attached"})
            pipe.expire(key, CONTACT_TTL_SECONDS)
            pipe.zrem(self._ack_due_key(), ticket_id)
            await pipe.execute()

    async def mark_csat_answered(self, ticket_id: str) -> None:
        key = self._contact_key(ticket_id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(key, "csat", "answered")
            pipe.expire(key, CONTACT_TTL_SECONDS)
            await pipe.execute()

    # -- acknowledgements waiting for the classification ---------------------------------------

    @staticmethod
    def _ack_due_key() -> str:
        return "tm:notifier:ack_due"

    async def ack_later(self, ticket_id: str, due_at: float) -> None:
        await self._client.zadd(self._ack_due_key(), {ticket_id: due_at}, nx=True)

    async def lease_due_acks(self, now: float, limit: int = 50) -> list[str]:
        return list(await self._lease_due(keys=[self._ack_due_key()], args=[now, ACK_LEASE_SECONDS, limit]))

    async def forget_due_ack(self, ticket_id: str) -> None:
        await self._client.zrem(self._ack_due_key(), ticket_id)

    async def acks_waiting(self) -> int:
        return int(await self._client.zcard(self._ack_due_key()))

    # -- agents' presence ----------------------------------------------------------------------

    async def set_presence(self, agent_id: str, presence: str, at: float) -> bool:
        """False when a newer presence is already known (a late, older event)."""
        return bool(await self._set_presence(keys=[f"tm:notifier:presence:{agent_id}"],
                                             args=[presence, repr(at), PRESENCE_TTL_SECONDS]))

    async def presence(self, agent_id: str) -> str | None:
        return await self._client.hget(f"tm:notifier:presence:{agent_id}", "presence")

    # -- group chat robots ---------------------------------------------------------------------

    async def claim_robot_message(self, notification_id: str) -> str:
        """``claimed`` if this caller may post now; else ``sending`` (someone else is) or ``sent``."""
        return await self._claim(keys=[f"tm:notifier:robot:{notification_id}"],
                                 args=[SENDING, ROBOT_SENDING_TTL_SECONDS, CLAIMED])

    async def release_robot_message(self, notification_id: str) -> None:
        await self._release(keys=[f"tm:notifier:robot:{notification_id}"], args=[SENDING])

    async def mark_robot_message_sent(self, notification_id: str) -> None:
        await self._client.set(f"tm:notifier:robot:{notification_id}", SENT, ex=ROBOT_SENT_TTL_SECONDS)

    async def take_robot_rate(self, robot: str, limit: int, now: float) -> bool:
        """True if one more message to ``robot`` fits in the current minute."""
        minute = int(now // ROBOT_RATE_WINDOW_SECONDS)
        return bool(await self._take_rate(keys=[f"tm:notifier:robot_rate:{robot}:{minute}"],
                                          args=[limit, ROBOT_RATE_WINDOW_SECONDS]))
