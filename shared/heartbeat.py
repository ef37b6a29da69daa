"""Which replicas are alive: every service process writes a heartbeat key to Redis.

``tm:mesh:replica:<service>:<replica>`` holds a small JSON record (service, replica, host, pid,
started_at, seen_at, http address if any) and expires ``TTL_SECONDS`` after the last write; a
replica writes it every ``INTERVAL_SECONDS``. A replica that dies simply stops being listed
once its key expires, so ``ticketmesh status`` shows the mesh as it is, without anyone having
to deregister. The key is refreshed from the service's own loop: a replica wedged so badly it
cannot write every few seconds is not one to count on.
"""
from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from typing import Any

PREFIX = "tm:mesh:replica:"
INTERVAL_SECONDS = 10.0
TTL_SECONDS = 30
SCAN_COUNT = 500


def key(service: str, replica: str) -> str:
    return f"{PREFIX}{service}:{replica}"


@dataclass(frozen=True)
class Beat:
    service: str
    replica: str
    started_at: float
    http: str = ""

    def record(self, now: float) -> str:
        return json.dumps({"service": self.service, "replica": self.replica, "host": socket.gethostname(),
                           "pid": os.getpid(), "started_at": self.started_at, "seen_at": now, "http": self.http})

    def write(self, client: Any, now: float) -> None:
        """With a sync redis client."""
        client.set(key(self.service, self.replica), self.record(now), ex=TTL_SECONDS)

    async def write_async(self, client: Any, now: float) -> None:
        await client.set(key(self.service, self.replica), self.record(now), ex=TTL_SECONDS)

    def forget(self, client: Any) -> None:
        client.delete(key(self.service, self.replica))

    async def forget_async(self, client: Any) -> None:
        await client.delete(key(self.service, self.replica))


def replicas(client: Any) -> list[dict]:
    """Every live replica's record (sync client), sorted by service and replica."""
    keys = sorted(client.scan_iter(match=PREFIX + "*", count=SCAN_COUNT))
    out = []
    for raw in (client.mget(keys) if keys else []):
        if raw is None:  # expired between SCAN and MGET
            continue
        try:
            out.append(json.loads(raw))
        except ValueError:
            continue
    return sorted(out, key=lambda r: (r.get("service", ""), r.get("replica", "")))
