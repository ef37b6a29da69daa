"""Redis clients with the mesh's retry policy, for both runtimes.

Stores (one class per service, owning its keys) take one of these clients; a command that
meets a dropped connection is retried with backoff before the error reaches the caller, and a
consumer treats what remains as transient (the message goes back to its queue).
:data:`CHANGE_VALUE_LUA` changes one value and its indexes optimistically in one round trip.
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


# Optimistic change of one value without WATCH: the caller computed the new value from the one
# it believes is stored (read earlier, or last written by this replica), and this script writes
# it, with the writes that go with it, only if the value is still that one (compared by SHA-1: no
# need to send it back). On a mismatch it answers what is stored, so the caller re-applies its
# change without another GET. One round trip instead of WATCH, GET and MULTI/EXEC's three.
# KEYS: the value's key, then the key of each op that names one, in order
# ARGV: sha1 of the value expected ('' when absent), new value, TTL seconds, ops as a JSON list of
#       [command, 1 if it names a key else 0, arguments...] (all strings)
# Returns {1} when written; {0, stored value} on a mismatch; {0} when absent and not expected so.
_APPLY_OPS_LUA = """
local k = 1
for _, op in ipairs(cjson.decode(ARGV[4])) do
  local call = {op[1]}
  if op[2] == 1 then k = k + 1; call[2] = KEYS[k] end
  for i = 3, #op do call[#call + 1] = op[i] end
  redis.call(unpack(call))
end
"""
CHANGE_VALUE_LUA = """
local current = redis.call('GET', KEYS[1])
if redis.sha1hex(current or '') ~= ARGV[1] then
  if current then return {0, current} end
  return {0}
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
""" + _APPLY_OPS_LUA + """
return {1}
"""


def change_value_call(key: str, expected: str | None, after: str, ttl: int, writes: "Writes") -> tuple[list[str], list[str]]:
    """KEYS and ARGV of :data:`CHANGE_VALUE_LUA` (``expected`` None: the key should be absent)."""
    return ([key, *writes.keys],
            [hashlib.sha1((expected or "").encode()).hexdigest(), after, str(int(ttl)),
             json.dumps(writes.ops, ensure_ascii=False)])


def _arg(value: object) -> str:
    return repr(value) if isinstance(value, float) else str(value)  # as redis-py encodes them


class Writes:
    """The pipeline methods stores use for the writes that go with a value (``zadd``, ``zrem``,
    ``expire``, ``publish``), collected for :data:`CHANGE_VALUE_LUA`."""

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
