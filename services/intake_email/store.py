"""intake_email's Redis state, behind domain verbs.

Keys this store owns (besides the shared intake ledger's, which it drives through
:class:`~shared.intake_ledger.IntakeLedger`):

- ``tm:intake_email:checkpoint:<mailbox>`` – hash ``uidvalidity``, ``last_uid``, ``account``: the
  highest UID whose handling is finished (published, flagged). Never expires: it is the
  mailbox's high-water mark, and losing it only costs a re-scan of unread mail.
- ``tm:intake_email:lease:<mailbox>`` – which replica watches the mailbox (``LEASE`` TTL, renewed
  while watching), so N replicas never fetch the same mail twice at once.
- ``tm:intake_email:reply:<kind>:<key>`` – ticket id a follow-up message was attached to;
  ``tm:intake_email:reply_published:<kind>:<key>`` – its message_received was confirmed.
- ``tm:intake_email:link_plan:<kind>:<key>`` – written right before a message claims a new
  ticket number: the closed ticket the new one follows up ("" for none), so the ticket is
  published linked even when the publish is retried after a crash (``REPLY_TTL_SECONDS``).
- ``tm:intake_email:participants:<ticket>`` – set of the addresses taking part in a ticket (who
  may use its subject tag); ``tm:intake_email:ticket:<ticket>`` – hash ``resolved_at`` and
  ``followed_up_at`` (epoch seconds, each only ever raised, so a redelivered ticket_resolved
  cannot close a ticket a later mail reopened) and ``linked_ticket_id`` (the closed ticket a new
  one follows up). Both live as long as the contact keys (``REPLY_TTL_SECONDS``), refreshed on write;
  a ticket with neither is one intake_email no longer knows (``Lookups.known_tickets``).
- ``tm:intake_email:flood:<sender hash>`` – ZSET of the sender's recent messages (member: the
  message's identity, score: when first seen); entries older than the flood window are trimmed
  and the key expires one window after the last message.
- ``tm:intake_email:mailbox_state:<mailbox>`` – hash ``state``, ``since``, ``last_ok_at``,
  ``last_error``, ``holder`` written by the replica watching the mailbox (see
  :mod:`~services.intake_email.health`); expires a day after its last update.
- ``tm:intake_email:release:<sha256 of the raw message>`` – set by ``ticketmesh quarantine
  reprocess``: the next intake of exactly these bytes skips the automatic and flood checks,
  once (deleted when that intake finished). Expires after 7 days.
- ``tm:intake_email:rejected:<mailbox>:<uidvalidity>:<uid>`` – its mail_rejected was confirmed
  (so a re-fetch does not tell the sender twice); 90 days.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable

import redis

from shared.intake_ledger import CONTACT_TTL_SECONDS, IntakeLedger
from services.intake_email.thread_match import Lookups

SERVICE = "intake_email"
REPLY_TTL_SECONDS = CONTACT_TTL_SECONDS  # as long as the ticket keys they point at

_ADVANCE = """
local key = KEYS[1]
if redis.call('HGET', key, 'uidvalidity') == ARGV[1] and redis.call('HGET', key, 'account') == ARGV[3] then
  local current = tonumber(redis.call('HGET', key, 'last_uid') or '0')
  if tonumber(ARGV[2]) <= current then return current end
end
redis.call('HSET', key, 'uidvalidity', ARGV[1], 'last_uid', ARGV[2], 'account', ARGV[3])
return tonumber(ARGV[2])
"""
_HOLD_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
  return 1
end
return 0
"""
_RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_CLAIM_REPLY = """
local existing = redis.call('GET', KEYS[1])
if existing then return {existing, 0} end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
return {ARGV[1], 1}
"""
_RECORD_IN_WINDOW = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[3]))
redis.call('ZADD', KEYS[1], 'NX', tonumber(ARGV[1]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) * 1000))
return redis.call('ZCARD', KEYS[1])
"""
MAILBOX_STATE_TTL_SECONDS = 24 * 3600
RELEASE_TTL_SECONDS = 7 * 24 * 3600
STATE_FIELDS = ("state", "since", "last_ok_at", "last_error", "holder")


def release_key(raw_sha256: str) -> str:
    """The one-shot marker ``ticketmesh quarantine reprocess`` sets for a message's raw bytes."""
    return f"tm:{SERVICE}:release:{raw_sha256}"


def lease_key(mailbox: str) -> str:
    return f"tm:{SERVICE}:lease:{mailbox}"

# Everything the thread decision needs, in one round trip: the ticket of the nearest chain id we
# stored, then, for that ticket and the ones asked for, whether the sender takes part in it and
# when it was resolved / followed up. KEYS: n "opened" keys then n "reply" keys (chain order);
# ARGV: n, sender, key prefix, tickets. Per-ticket keys are built here because the chain's
# ticket is only known once found (single-instance Redis, as everywhere in the mesh).
_THREAD_LOOKUP = """
local n = tonumber(ARGV[1])
local chain_ticket, chain_index = false, 0
for i = 1, n do
  local t = redis.call('GET', KEYS[i])
  if not t then t = redis.call('GET', KEYS[n + i]) end
  if t then chain_ticket, chain_index = t, i; break end
end
local tickets = {}
for i = 4, #ARGV do tickets[#tickets + 1] = ARGV[i] end
if chain_ticket then tickets[#tickets + 1] = chain_ticket end
local facts = {}
for _, t in ipairs(tickets) do
  local members = ARGV[3] .. 'participants:' .. t
  local times = redis.call('HMGET', ARGV[3] .. 'ticket:' .. t, 'resolved_at', 'followed_up_at')
  facts[#facts + 1] = t
  facts[#facts + 1] = redis.call('SISMEMBER', members, ARGV[2])
  facts[#facts + 1] = redis.call('EXISTS', members, ARGV[3] .. 'ticket:' .. t)
  facts[#facts + 1] = times[1] or ''
  facts[#facts + 1] = times[2] or ''
end
return {chain_ticket or '', chain_index, facts}
"""
# KEYS: link plan, ticket hash, participants; ARGV: ticket TTL, addresses. Returns the link.
_PREPARE_TICKET = """
local planned = redis.call('GET', KEYS[1])
if planned and planned ~= '' then redis.call('HSETNX', KEYS[2], 'linked_ticket_id', planned) end
for i = 2, #ARGV do redis.call('SADD', KEYS[3], ARGV[i]) end
if #ARGV > 1 then redis.call('EXPIRE', KEYS[3], tonumber(ARGV[1])) end
local linked = redis.call('HGET', KEYS[2], 'linked_ticket_id')
if linked then redis.call('EXPIRE', KEYS[2], tonumber(ARGV[1])) end
return linked
"""
_RAISE_FIELD = """
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > current then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""


@dataclass(frozen=True)
class Checkpoint:
    uidvalidity: int
    last_uid: int
    account: str


def _reply_key(kind: str, key: str) -> str:
    return f"tm:{SERVICE}:reply:{kind}:{key}"


def _participants_key(ticket_id: str) -> str:
    return f"tm:{SERVICE}:participants:{ticket_id}"


def _ticket_key(ticket_id: str) -> str:
    return f"tm:{SERVICE}:ticket:{ticket_id}"


class IntakeEmailStore:
    def __init__(self, client: redis.Redis):
        self._client = client
        self.ledger = IntakeLedger(client, SERVICE)
        self._advance = client.register_script(_ADVANCE)
        self._hold = client.register_script(_HOLD_LEASE)
        self._release = client.register_script(_RELEASE_LEASE)
        self._claim_reply = client.register_script(_CLAIM_REPLY)
        self._thread_lookup = client.register_script(_THREAD_LOOKUP)
        self._raise_field = client.register_script(_RAISE_FIELD)
        self._prepare_ticket = client.register_script(_PREPARE_TICKET)
        self._record_in_window = client.register_script(_RECORD_IN_WINDOW)

    # -- mailbox checkpoints -------------------------------------------------------------------

    def checkpoint(self, mailbox: str) -> Checkpoint | None:
        raw = self._client.hgetall(f"tm:{SERVICE}:checkpoint:{mailbox}")
        if not raw or "uidvalidity" not in raw:
            return None
        return Checkpoint(int(raw["uidvalidity"]), int(raw.get("last_uid", 0)), raw.get("account", ""))

    def advance_checkpoint(self, mailbox: str, *, account: str, uidvalidity: int, uid: int) -> int:
        """Raise the high-water mark to ``uid`` (never lower it); a new UIDVALIDITY or account starts over."""
        return int(self._advance(keys=[f"tm:{SERVICE}:checkpoint:{mailbox}"], args=[uidvalidity, uid, account]))

    # -- who watches a mailbox -----------------------------------------------------------------

    def hold_lease(self, mailbox: str, holder: str, ttl_seconds: float) -> bool:
        """Take or renew the mailbox lease; False while another replica holds it."""
        return bool(self._hold(keys=[lease_key(mailbox)], args=[holder, int(ttl_seconds * 1000)]))

    def release_lease(self, mailbox: str, holder: str) -> None:
        self._release(keys=[lease_key(mailbox)], args=[holder])

    def lease_holder(self, mailbox: str) -> str | None:
        return self._client.get(lease_key(mailbox))

    # -- mailbox health ------------------------------------------------------------------------

    def record_mailbox_state(self, mailbox: str, **fields: str | float) -> None:
        """Update some of STATE_FIELDS (only the watching replica calls this)."""
        key = f"tm:{SERVICE}:mailbox_state:{mailbox}"
        pipe = self._client.pipeline(transaction=True)
        pipe.hset(key, mapping={k: str(v) for k, v in fields.items() if k in STATE_FIELDS})
        pipe.expire(key, MAILBOX_STATE_TTL_SECONDS)
        pipe.execute()

    def mailbox_states(self, mailboxes: list[str]) -> list[tuple[dict[str, str], str | None]]:
        """``(state record, lease holder)`` of each mailbox, in one round trip."""
        pipe = self._client.pipeline(transaction=False)
        for name in mailboxes:
            pipe.hgetall(f"tm:{SERVICE}:mailbox_state:{name}")
            pipe.get(lease_key(name))
        replies = pipe.execute()
        return [(replies[i] or {}, replies[i + 1]) for i in range(0, len(replies), 2)]

    def ping(self) -> bool:
        return bool(self._client.ping())

    # -- flood window and quarantine release ---------------------------------------------------

    def record_sender_message(self, sender_hash: str, member: str, *, now: float, window_seconds: float) -> int:
        """Count ``member`` in the sender's sliding window (once, however often it is seen);
        return how many distinct messages the window now holds."""
        return int(self._record_in_window(keys=[f"tm:{SERVICE}:flood:{sender_hash}"],
                                          args=[now, member, window_seconds]))

    def is_released(self, raw_sha256: str) -> bool:
        return bool(self._client.exists(release_key(raw_sha256)))

    def clear_release(self, raw_sha256: str) -> None:
        self._client.delete(release_key(raw_sha256))

    def release(self, raw_sha256: str) -> None:
        self._client.set(release_key(raw_sha256), "1", ex=RELEASE_TTL_SECONDS)

    def is_rejection_published(self, mailbox: str, uidvalidity: int, uid: int) -> bool:
        return bool(self._client.exists(f"tm:{SERVICE}:rejected:{mailbox}:{uidvalidity}:{uid}"))

    def mark_rejection_published(self, mailbox: str, uidvalidity: int, uid: int) -> None:
        self._client.set(f"tm:{SERVICE}:rejected:{mailbox}:{uidvalidity}:{uid}", "1", ex=REPLY_TTL_SECONDS)

    # -- tickets and follow-ups by message -----------------------------------------------------

    def ticket_opened_by(self, kind: str, key: str) -> str | None:
        """The ticket this very message opened, if it did."""
        return self.ledger.ticket_for(kind, key)

    def ticket_replied_by(self, kind: str, key: str) -> str | None:
        """The ticket this very message was added to as a follow-up, if it was."""
        return self._client.get(_reply_key(kind, key))

    def plan_link(self, kind: str, key: str, linked_ticket_id: str | None) -> None:
        """Before :meth:`claim_ticket`: the closed ticket this message's new ticket will follow up
        (None: none; overwrites what an attempt that never claimed planned)."""
        self._client.set(f"tm:{SERVICE}:link_plan:{kind}:{key}", linked_ticket_id or "", ex=REPLY_TTL_SECONDS)

    def prepare_ticket(self, kind: str, key: str, ticket_id: str, participants: Iterable[str]) -> str | None:
        """Right before publishing the ticket this message claimed (again after a crash: idempotent):
        link it as planned, add its participants; returns the ticket it is linked to."""
        addresses = sorted({a.lower() for a in participants if a})
        return self._prepare_ticket(
            keys=[f"tm:{SERVICE}:link_plan:{kind}:{key}", _ticket_key(ticket_id), _participants_key(ticket_id)],
            args=[REPLY_TTL_SECONDS, *addresses])

    def claim_ticket(self, kind: str, key: str) -> tuple[str, bool]:
        return self.ledger.claim_ticket(kind, key)

    def is_ticket_published(self, ticket_id: str) -> bool:
        return self.ledger.is_published(ticket_id)

    def mark_ticket_published(self, ticket_id: str) -> None:
        self.ledger.mark_published(ticket_id)

    def claim_reply(self, kind: str, key: str, ticket_id: str) -> str:
        """Attach a follow-up message to ``ticket_id``; a message attached before keeps its ticket."""
        attached, _created = self._claim_reply(keys=[_reply_key(kind, key)],
                                               args=[ticket_id, REPLY_TTL_SECONDS])
        return attached

    def is_reply_published(self, kind: str, key: str) -> bool:
        return bool(self._client.exists(f"tm:{SERVICE}:reply_published:{kind}:{key}"))

    def mark_reply_published(self, kind: str, key: str) -> None:
        self._client.set(f"tm:{SERVICE}:reply_published:{kind}:{key}", "1", ex=REPLY_TTL_SECONDS)

    # -- threading: participants, resolution, links -------------------------------------------

    def thread_lookups(self, kind: str, chain_keys: list[str], *, sender: str, tickets: Iterable[str]) -> Lookups:
        """What :func:`~services.intake_email.thread_match.decide` needs, in one round trip:
        the ticket of the first of ``chain_keys`` (nearest first) that has one, and for it and
        ``tickets`` whether ``sender`` takes part and whether it is resolved."""
        chain_ticket, index, facts = self._thread_lookup(
            keys=[*self.ledger.contact_keys(kind, chain_keys), *(_reply_key(kind, k) for k in chain_keys)],
            args=[len(chain_keys), sender.lower(), f"tm:{SERVICE}:", *tickets])
        participant_of, known, resolved = set(), set(), {}
        for i in range(0, len(facts), 5):
            ticket, is_member, exists, resolved_at, followed_up_at = facts[i:i + 5]
            if int(is_member):
                participant_of.add(ticket)
            if int(exists):
                known.add(ticket)
            if resolved_at and float(resolved_at) > float(followed_up_at or 0):
                resolved[ticket] = datetime.fromtimestamp(float(resolved_at), timezone.utc)
        return Lookups(chain_ticket=chain_ticket or None, chain_index=int(index) - 1 if chain_ticket else None,
                       participant_of=frozenset(participant_of), known_tickets=frozenset(known), resolved=resolved)

    def add_participants(self, ticket_id: str, addresses: Iterable[str]) -> None:
        addresses = sorted({a.lower() for a in addresses if a})
        if not addresses:
            return
        pipe = self._client.pipeline(transaction=False)
        pipe.sadd(_participants_key(ticket_id), *addresses)
        pipe.expire(_participants_key(ticket_id), REPLY_TTL_SECONDS)
        pipe.execute()

    def mark_resolved(self, ticket_id: str, at: datetime) -> None:
        """Idempotent: a redelivered or older resolution never moves ``resolved_at`` back."""
        self._raise_field(keys=[_ticket_key(ticket_id)], args=["resolved_at", at.timestamp(), REPLY_TTL_SECONDS])

    def mark_followed_up(self, ticket_id: str, at: datetime) -> None:
        """A customer wrote again: a resolution before ``at`` no longer counts (agent_desk reopens)."""
        self._raise_field(keys=[_ticket_key(ticket_id)], args=["followed_up_at", at.timestamp(), REPLY_TTL_SECONDS])

    def linked_ticket(self, ticket_id: str) -> str | None:
        return self._client.hget(_ticket_key(ticket_id), "linked_ticket_id")
