"""Is each mailbox watched, and since when is it stuck? Pure (time passed in, no I/O).

The watcher of a mailbox (the replica holding its lease) records its state in Redis (see
:class:`~services.intake_email.store.IntakeEmailStore`): ``watching`` (connected, idling or
fetching), ``reconnecting`` (server away or dropped us), ``auth_failed`` (login refused), with
``since`` (when that state began), ``last_ok_at`` (the last time a round went well, or a quiet IDLE on an open connection was
checked),
``last_error`` and ``holder``. Any replica, and the CLI, judge it with :func:`judge_mailbox`.

A mailbox is *stalled* when nothing went well for longer than ``stall_seconds`` (measured from
``last_ok_at``, or from ``since`` when it never went well), whatever the recorded state says:
a watcher hung on a silent server still says ``watching`` but stops updating ``last_ok_at``.
It is *unwatched* when no replica holds its lease.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Mapping

WATCHING = "watching"
STANDBY = "standby"
RECONNECTING = "reconnecting"
AUTH_FAILED = "auth_failed"
STATES = (WATCHING, STANDBY, RECONNECTING, AUTH_FAILED)
LAST_ERROR_MAX = 200


@dataclass(frozen=True)
class MailboxHealth:
    name: str
    ok: bool
    state: str  # one of STATES, or "unwatched"
    since: float | None
    last_ok_at: float | None
    last_error: str
    holder: str
    problem: str  # "" when ok: "unwatched" or "stalled"


def judge_mailbox(name: str, record: Mapping[str, str], lease_holder: str | None, *, now: float,
                  stall_seconds: float) -> MailboxHealth:
    since = _float(record.get("since"))
    last_ok = _float(record.get("last_ok_at"))
    state = record.get("state", "") or "unknown"
    if not lease_holder:
        return MailboxHealth(name, False, "unwatched", since, last_ok, record.get("last_error", ""), "",
                             "unwatched")
    reference = last_ok if last_ok is not None else since
    stalled = reference is None or now - reference > stall_seconds
    return MailboxHealth(name, not stalled, state, since, last_ok, record.get("last_error", ""),
                         record.get("holder", lease_holder), "stalled" if stalled else "")


def short_error(text: str) -> str:
    return " ".join(text.split())[:LAST_ERROR_MAX]


def _float(raw: str | None) -> float | None:
    try:
        return float(raw) if raw not in (None, "") else None
    except ValueError:
        return None


def readiness(*, redis_ok: bool, rabbitmq_ok: bool, mailboxes: list[MailboxHealth],
              now: float) -> tuple[int, dict]:
    """``(HTTP status, JSON body)`` of ``/readyz``: 200 only when everything is fine."""
    problems = [m for m in mailboxes if not m.ok]
    ready = redis_ok and rabbitmq_ok and not problems
    return (200 if ready else 503), {
        "ready": ready,
        "redis": "ok" if redis_ok else "unreachable",
        "rabbitmq": "ok" if rabbitmq_ok else "unreachable",
        "mailboxes": [_describe(m, now) for m in mailboxes],
        "stalled": [m.name for m in problems],
    }


def _describe(m: MailboxHealth, now: float) -> dict:
    stuck_since = m.last_ok_at if m.last_ok_at is not None else m.since
    out = {"name": m.name, "ok": m.ok, "state": m.state, "since": _iso(m.since),
           "last_ok_at": _iso(m.last_ok_at), "holder": m.holder}
    if m.last_error:
        out["last_error"] = m.last_error
    if not m.ok:
        out["problem"] = m.problem
        out["stalled_since"] = _iso(stuck_since)
        out["stalled_seconds"] = round(now - stuck_since, 1) if stuck_since is not None else None
    return out


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat() if ts is not None else None
