"""Asking every dispatcher replica to re-read its roster and rules files now, and hearing back.

Request: ``tm:dispatcher:config:reload`` is a counter. ``ticketmesh roster|rules reload`` INCRs
it and remembers the number. Each replica's reload timer (every second) GETs it; a number it has
not handled makes it look at both files at once (not at the next ``TM_CONFIG_RELOAD_SECONDS``),
carry a new roster into Redis, and then report.

Report: ``tm:dispatcher:config:loaded:<replica>`` holds what that replica has in use: per file
its path, SHA-256 of the content, version, when it was loaded and the error of a newer version
it refused, plus ``handled``, the last request number it acted on. A replica also rewrites it
whenever what it uses changes without a request, so it always says what the replica routes by.
The command waits until every replica with a live heartbeat (shared/heartbeat.py) reports
``handled >= request`` with the file's hash.

Why a counter in Redis and not a broadcast event: the dispatcher's consumers share their queues
(one replica gets each event), so a broadcast would need a queue per replica, a new event type
and its topology; a replica that is reconnecting to RabbitMQ would miss it, while it reads the
counter on its next tick. The answers have to be gathered in one place anyway, and the
heartbeats that say which replicas are alive are in Redis too. The cost is one GET per replica
per second. A number, not a token: two operators reloading at once both see their request
answered by the later one (``handled >= request``).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

REQUEST_KEY = "tm:dispatcher:config:reload"
REPORT_PREFIX = "tm:dispatcher:config:loaded:"
# Only reports of replicas with a live heartbeat are read; the TTL just clears gone replicas' keys.
REPORT_TTL_SECONDS = 7 * 24 * 3600

ROSTER, RULES = "roster", "rules"

LOADED, DIFFERENT, WAITING, GONE = "loaded", "different", "waiting", "gone"


@dataclass(frozen=True)
class FileState:
    """One file as a replica uses it."""

    path: str
    sha256: str
    version: int
    loaded_at: float
    error: str | None = None  # a newer version of the file that did not validate (kept this one)


class ReloadStore:
    """The request counter and the replicas' reports (sync redis client, decode_responses)."""

    def __init__(self, client: Any):
        self.client = client

    def request(self) -> int:
        return int(self.client.incr(REQUEST_KEY))

    def requested(self) -> int:
        return int(self.client.get(REQUEST_KEY) or 0)

    def write_report(self, replica: str, handled: int, files: Mapping[str, FileState], now: float) -> None:
        record = {"replica": replica, "handled": handled, "reported_at": now,
                  "files": {name: asdict(state) for name, state in files.items()}}
        self.client.set(REPORT_PREFIX + replica, json.dumps(record), ex=REPORT_TTL_SECONDS)

    def reports(self, replicas: Iterable[str]) -> dict[str, dict]:
        names = list(replicas)
        raws = self.client.mget([REPORT_PREFIX + r for r in names]) if names else []
        out = {}
        for name, raw in zip(names, raws):
            if raw is None:
                continue
            try:
                out[name] = json.loads(raw)
            except ValueError:
                continue
        return out


class Responder:
    """A replica's side: is there a request it has not handled, and report what it uses.

    ``loaded_at`` is when this replica first used a version (its own clock, passed in).
    """

    def __init__(self, store: ReloadStore, replica: str):
        self.store = store
        self.replica = replica
        self.handled = 0
        self._loaded_at: dict[str, tuple[str, float]] = {}
        self._reported: dict[str, tuple] | None = None

    def pending(self) -> int | None:
        """The request number to act on, or None (one GET)."""
        requested = self.store.requested()
        return requested if requested != self.handled else None

    def report(self, files: Mapping[str, tuple[str, str, int, str | None]], *, request: int | None,
               now: float) -> None:
        """``files``: name → (path, sha256, version, error). Written when a request was acted on
        or what is in use changed; otherwise nothing is sent."""
        states = {}
        for name, (path, digest, version, error) in files.items():
            seen = self._loaded_at.get(name)
            if seen is None or seen[0] != digest:
                self._loaded_at[name] = seen = (digest, now)
            states[name] = FileState(path=path, sha256=digest, version=version, loaded_at=seen[1], error=error)
        summary = {name: (s.sha256, s.version, s.error) for name, s in states.items()}
        if request is None and summary == self._reported:
            return
        handled = self.handled if request is None else request
        self.store.write_report(self.replica, handled, states, now)
        self._reported, self.handled = summary, handled


@dataclass(frozen=True)
class ReplicaOutcome:
    replica: str
    # LOADED; DIFFERENT: acted on the request but uses other content (its file differs, or is
    # refused: see error); WAITING: not acted on it yet; GONE: its heartbeat went away unconfirmed
    status: str
    sha256: str = ""
    version: int | None = None
    loaded_at: float | None = None
    path: str = ""
    error: str | None = None


def outcomes(replicas: Iterable[str], reports: Mapping[str, dict], *, name: str, request: int, sha256: str,
             live: Iterable[str] = ()) -> list[ReplicaOutcome]:
    """Where each replica stands on request ``request`` for file ``name`` with hash ``sha256``.

    A replica whose heartbeat is gone (stopped during the wait) and that had not confirmed is GONE.
    """
    alive = set(live)
    out = []
    for replica in replicas:
        report = reports.get(replica)
        state = (report or {}).get("files", {}).get(name) or {}
        if not report or int(report.get("handled", 0)) < request or not state:
            out.append(ReplicaOutcome(replica, WAITING if replica in alive else GONE))
            continue
        status = LOADED if state.get("sha256") == sha256 else DIFFERENT
        out.append(ReplicaOutcome(replica, status, sha256=state.get("sha256", ""), version=state.get("version"),
                                  loaded_at=state.get("loaded_at"), path=state.get("path", ""),
                                  error=state.get("error")))
    return out


def confirmed(results: Iterable[ReplicaOutcome]) -> bool:
    """Every replica still running uses the file. DIFFERENT is still waited on: a mounted
    Secret or ConfigMap reaches each pod's file with a delay, and the replica's own look at its
    file rewrites its report once it arrives."""
    return all(r.status in (LOADED, GONE) for r in results)
