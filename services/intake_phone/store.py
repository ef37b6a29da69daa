"""intake_phone's Redis keys: the state of each call, ``tm:intake_phone:call:<hash of callId>``.

Events of one call may be handled concurrently (a PBX retry racing the next event), so a call
is updated with WATCH/MULTI: read, apply the pure transition, write only if nobody wrote in
between, else try again. Ticket numbers and "published" marks belong to shared.intake_ledger.
"""
from __future__ import annotations

import json
from typing import Callable

import redis.asyncio
from redis.exceptions import WatchError

from shared.errors import TransientError
from shared.intake_ledger import natural_key_hash

from services.intake_phone.calls import CallState

CALL_STATE_TTL_SECONDS = 7 * 24 * 3600  # PBX retries and late events arrive within hours, not weeks
UPDATE_ATTEMPTS = 20


class PhoneStore:
    def __init__(self, client: redis.asyncio.Redis):
        self._client = client

    @staticmethod
    def _call_key(call_id: str) -> str:
        return f"tm:intake_phone:call:{natural_key_hash(call_id)}"

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
