"""intake_phone's Redis keys.

- ``tm:intake_phone:call:<hash of callId>``: one call's state (CTI events merged, the ticket it
  went to, what was published), JSON. Events of one call may be handled concurrently (a PBX
  retry racing the next event, a CDR import racing the webhook), so a call is updated with
  WATCH/MULTI: read, apply the pure transition, write only if nobody wrote in between, else
  try again.
- ``tm:intake_phone:fold:<line>:<hash of the caller's number>``: the callback ticket a caller's
  missed calls on a line currently fold into: ``ticket_id``, ``trace_id``, ``last_at`` (epoch
  seconds of the latest call folded or opened). Written only once that ticket was published,
  so nothing folds into a ticket consumers have not seen; lives one fold window.

Ticket numbers belong to shared.intake_ledger.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import redis.asyncio
from redis.exceptions import WatchError

from shared.errors import TransientError
from shared.intake_ledger import natural_key_hash

from services.intake_phone.calls import CallState

CALL_STATE_TTL_SECONDS = 7 * 24 * 3600  # PBX retries and late transcripts arrive within hours, not weeks
UPDATE_ATTEMPTS = 20
FOLD_TTL_SLACK_SECONDS = 60

# Point the fold at a ticket: the call that opened it replaces a fold no newer than itself; a call
# folded into it only moves last_at forward. Returns 1 when the fold now names the ticket.
_NOTE_FOLD = """
local current = redis.call('HGET', KEYS[1], 'ticket_id')
local last = tonumber(redis.call('HGET', KEYS[1], 'last_at') or '-1')
local at = tonumber(ARGV[3])
if current == ARGV[1] then
  if at > last then redis.call('HSET', KEYS[1], 'last_at', ARGV[3]) end
elseif ARGV[5] == '1' and ((not current) or at >= last) then
  redis.call('HSET', KEYS[1], 'ticket_id', ARGV[1], 'trace_id', ARGV[2], 'last_at', ARGV[3])
else
  return 0
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return 1
"""


@dataclass(frozen=True)
class Fold:
    ticket_id: str
    trace_id: str
    last_at: float


class PhoneStore:
    def __init__(self, client: redis.asyncio.Redis):
        self._client = client
        self._note_fold = client.register_script(_NOTE_FOLD)

    @staticmethod
    def _call_key(call_id: str) -> str:
        return f"tm:intake_phone:call:{natural_key_hash(call_id)}"

    @staticmethod
    def _fold_key(line: str, number: str) -> str:
        return f"tm:intake_phone:fold:{natural_key_hash(line)}:{natural_key_hash(number)}"

    async def call(self, call_id: str) -> CallState | None:
        raw = await self._client.get(self._call_key(call_id))
        return CallState.from_dict(json.loads(raw)) if raw else None

    async def update_call(self, call_id: str, transition: Callable[[CallState | None], CallState]) -> CallState:
        """Apply ``transition`` to the stored call atomically and return the new state."""
        key = self._call_key(call_id)
        for _ in range(UPDATE_ATTEMPTS):
            async with self._client.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    before = CallState.from_dict(json.loads(raw)) if raw else None
                    after = transition(before)
                    if after == before:
                        return after
                    pipe.multi()
                    pipe.set(key, json.dumps(after.to_dict(), ensure_ascii=False), ex=CALL_STATE_TTL_SECONDS)
                    await pipe.execute()
                    return after
                except WatchError:
                    continue
        raise TransientError(f"call {call_id!r} kept changing under us")

    async def fold(self, line: str, number: str) -> Fold | None:
        data = await self._client.hgetall(self._fold_key(line, number))
        if not data.get("ticket_id"):
            return None
        return Fold(data["ticket_id"], data.get("trace_id", ""), float(data.get("last_at", "0")))

    async def note_fold(self, line: str, number: str, *, ticket_id: str, trace_id: str, at: float,
                        window_seconds: int, opened: bool) -> bool:
        """Record that the caller's call at ``at`` went to ``ticket_id`` (``opened``: it opened it)."""
        result = await self._note_fold(
            keys=[self._fold_key(line, number)],
            args=[ticket_id, trace_id, repr(at), window_seconds + FOLD_TTL_SLACK_SECONDS, "1" if opened else "0"],
        )
        return bool(result)
