"""Redis clients with the mesh's retry policy, for both runtimes.

Stores (one class per service, owning its keys) take one of these clients; a command that
meets a dropped connection is retried with backoff before the error reaches the caller, and a
consumer treats what remains as transient (the message goes back to its queue).
:class:`ValueChanger` changes one value and its indexes optimistically in one round trip.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Callable, Iterable

import redis
import redis.asyncio
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

RETRIES = 5
_RETRY_ON = [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]


def sync_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url, decode_responses=True, health_check_interval=15, socket_connect_timeout=5, socket_timeout=10,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), RETRIES), retry_on_error=_RETRY_ON,
    )


def async_client(url: str) -> redis.asyncio.Redis:
    from redis.asyncio.retry import Retry as AsyncRetry

    return redis.asyncio.Redis.from_url(
        url, decode_responses=True, health_check_interval=15, socket_connect_timeout=5, socket_timeout=10,
        retry=AsyncRetry(ExponentialBackoff(cap=2.0, base=0.1), RETRIES), retry_on_error=_RETRY_ON,
    )


# Optimistic change of one value without WATCH: the caller read ``before`` (one round trip),
# computed the new value, and this script writes it, with the writes that go with it, only if
# the value is still what was read (compared by SHA-1: no need to send it back). One round trip
# instead of WATCH, GET and MULTI/EXEC's three, and no connection held between them.
# KEYS: the value's key, then the key of each op that names one, in order
# ARGV: sha1 of the value read ('' when absent), new value, TTL seconds, ops as a JSON list of
#       [command, 1 if it names a key else 0, arguments...] (all strings)
# The writes that go with a value (ARGV[4], KEYS from 2): Lua shared by every script of this protocol.
APPLY_OPS_LUA = """
local k = 1
for _, op in ipairs(cjson.decode(ARGV[4])) do
  local call = {op[1]}
  if op[2] == 1 then k = k + 1; call[2] = KEYS[k] end
  for i = 3, #op do call[#call + 1] = op[i] end
  redis.call(unpack(call))
end
"""
_SET_IF_UNCHANGED = """
if redis.sha1hex(redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
""" + APPLY_OPS_LUA + """
return 1
"""


def _arg(value: object) -> str:
    return repr(value) if isinstance(value, float) else str(value)  # as redis-py encodes them


class Writes:
    """The pipeline methods stores use for the writes that go with a value (``zadd``, ``zrem``,
    ``expire``, ``publish``), collected for :meth:`ValueChanger.set_if_unchanged`."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.ops: list[list[object]] = []

    def _keyed(self, command: str, key: str, *args: object) -> None:
        self.keys.append(key)
        self.ops.append([command, 1, *(_arg(a) for a in args)])

    def zadd(self, name: str, mapping: dict[str, float]) -> None:
        for member, score in mapping.items():
            self._keyed("ZADD", name, score, member)

    def zrem(self, name: str, *members: str) -> None:
        self._keyed("ZREM", name, *members)

    def expire(self, name: str, seconds: int) -> None:
        self._keyed("EXPIRE", name, int(seconds))

    def publish(self, channel: str, message: str) -> None:
        self.ops.append(["PUBLISH", 0, channel, message])


class ValueChanger:
    """Compare-and-set of one string value plus its companion writes, atomically (a Lua script)."""

    def __init__(self, client: redis.asyncio.Redis):
        self._script = client.register_script(_SET_IF_UNCHANGED)

    async def set_if_unchanged(self, key: str, before: str | None, after: str, ttl: int, writes: Writes) -> bool:
        """Write ``after`` (and ``writes``) if ``key`` still holds ``before`` (None: absent);
        False if it changed meanwhile (read again and re-apply)."""
        seen = hashlib.sha1((before or "").encode()).hexdigest()
        return bool(await self._script(keys=[key, *writes.keys],
                                       args=[seen, after, int(ttl), json.dumps(writes.ops, ensure_ascii=False)]))


def execute_with_scripts(client: Any, queue_commands: Callable[[Any], None], scripts: Iterable[Any]) -> list:
    """One round trip for a pipeline that calls scripts by EVALSHA (a Script object in a pipeline
    costs a SCRIPT EXISTS round trip first). If Redis lost its scripts (a restart) ``scripts``
    are loaded and the pipeline is sent again: only for pipelines that are safe to repeat (a
    script that met NOSCRIPT did not run). Sync client."""
    def send() -> list:
        pipe = client.pipeline(transaction=False)
        queue_commands(pipe)
        return pipe.execute()

    try:
        return send()
    except redis.exceptions.NoScriptError:
        for script in scripts:
            client.script_load(script.script)
        return send()
