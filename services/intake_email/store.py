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

import redis

from shared.intake_ledger import CONTACT_TTL_SECONDS, IntakeLedger

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


@dataclass(frozen=True)
class Checkpoint:
    uidvalidity: int
    last_uid: int
    account: str


def _reply_key(kind: str, key: str) -> str:
    return f"tm:{SERVICE}:reply:{kind}:{key}"


class IntakeEmailStore:
    def __init__(self, client: redis.Redis):
        self._client = client
        self.ledger = IntakeLedger(client, SERVICE)
        self._advance = client.register_script(_ADVANCE)
        self._hold = client.register_script(_HOLD_LEASE)
        self._release = client.register_script(_RELEASE_LEASE)
        self._claim_reply = client.register_script(_CLAIM_REPLY)
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

    def first_ticket_of_messages(self, kind: str, keys: list[str]) -> str | None:
        """The ticket of the first of these messages that has one (opened it or followed up on
        it), in one round trip however long the thread."""
        if not keys:
            return None
        pipe = self._client.pipeline(transaction=False)
        pipe.mget(self.ledger.contact_keys(kind, keys))
        pipe.mget([_reply_key(kind, key) for key in keys])
        opened, replied = pipe.execute()
        return next((a or b for a, b in zip(opened, replied) if a or b), None)

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
