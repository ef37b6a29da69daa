"""``ticketmesh status``: the mesh at a glance, for people (tables) or scripts (``--json``).

    ticketmesh status [--json]

Shows the replicas seen (their heartbeats, shared/heartbeat.py) and the services with none;
queue depths and dead letters (RabbitMQ's management API, ``TM_RABBIT_MGMT_URL``); quarantined
mail (intake_email's quarantine folder under ``TM_DATA_DIR``); agents by presence; unresolved
tickets by status; SLA clocks at risk, due now and due in the next 15 minutes. A part that
cannot be read (management API down, say) is reported as an error in that part; the rest is
still shown. Exit code 0 when nothing needs attention, 1 when ``problems`` lists something.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote, unquote, urlsplit

from shared import heartbeat, mesh_facts
from shared.config import CommonSettings
from shared.topology import DEAD_LETTER_QUEUE

SERVICES = ("intake_email", "intake_chat", "intake_phone", "dispatcher", "sla_watcher", "notifier", "agent_desk")
DEFAULT_MGMT_URL = "http://guest:guest@127.0.0.1:15672"
MGMT_TIMEOUT_SECONDS = 5.0
QUEUES_SHOWN = 15  # the deepest; --json has all


def management_queues(mgmt_url: str, amqp_uri: str) -> list[dict]:
    """Queues of the mesh's vhost (the one in ``TM_AMQP_URI``) from the management API."""
    parts = urlsplit(mgmt_url.rstrip("/"))
    vhost = unquote(urlsplit(amqp_uri).path.lstrip("/")) or "/"
    base = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"
    request = urllib.request.Request(
        f"{base}/api/queues/{quote(vhost, safe='')}?columns=name,messages,messages_ready,"
        f"messages_unacknowledged,consumers")
    if parts.username:
        token = base64.b64encode(f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=MGMT_TIMEOUT_SECONDS) as response:  # noqa: S310 - operator's URL
        return json.loads(response.read())


def gather(common: CommonSettings, mgmt_url: str, *, now: float,
           progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Everything ``status`` shows, as JSON-ready data; a part that fails carries ``error``."""
    from shared.redis_store import sync_client

    out: dict[str, Any] = {"at": now}
    client = sync_client(common.redis_url)
    try:
        out["replicas"] = _part(lambda: _replicas(client, now))
        out["agents"] = _part(lambda: mesh_facts.agents_by_presence(client))
        out["tickets"] = _part(lambda: mesh_facts.open_tickets_by_status(client, progress))
        out["sla"] = _part(lambda: mesh_facts.sla_summary(client, now))
        if not _failed(out["replicas"]):
            out["config"] = _part(lambda: _dispatcher_config(client, out["replicas"]))
    finally:
        client.close()
    out["queues"] = _part(lambda: mesh_facts.queue_rows(management_queues(mgmt_url, common.amqp_uri)))
    out["quarantined"] = _part(lambda: _quarantined(common.data_dir))
    out["problems"] = problems(out)
    return out


def _part(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except Exception as exc:  # noqa: BLE001 - one unreadable part must not hide the others
        return {"error": f"{type(exc).__name__}: {exc}"}


def _replicas(client: Any, now: float) -> list[dict]:
    return [{"service": r.get("service", ""), "replica": r.get("replica", ""), "host": r.get("host", ""),
             "pid": r.get("pid", ""), "http": r.get("http", ""),
             "up_seconds": round(now - float(r.get("started_at") or now)),
             "seen_seconds_ago": round(now - float(r.get("seen_at") or now), 1)}
            for r in heartbeat.replicas(client)]


def _dispatcher_config(client: Any, replicas: list[dict]) -> dict[str, dict[str, dict]]:
    """The roster and rules each live dispatcher replica reports using (shared/config_reload.py):
    file → replica → sha256 and the error of a newer version it refused."""
    from shared.config_reload import ReloadStore

    names = [r["replica"] for r in replicas if r["service"] == "dispatcher"]
    out: dict[str, dict[str, dict]] = {}
    for replica, report in ReloadStore(client).reports(names).items():
        for name, state in report.get("files", {}).items():
            out.setdefault(name, {})[replica] = {"sha256": state.get("sha256", ""), "error": state.get("error")}
    return out


def config_problems(config: dict[str, dict[str, dict]]) -> list[str]:
    """Dispatcher replicas routing by different files, or keeping an old one a newer one failed."""
    found = []
    for name, by_replica in sorted(config.items()):
        hashes = {state["sha256"] for state in by_replica.values()}
        if len(hashes) > 1:
            found.append(f"dispatcher replicas use different {name} files: " + ", ".join(
                f"{replica} {state['sha256'][:12]}" for replica, state in sorted(by_replica.items()))
                + f" (ticketmesh {name} reload)")
        found += [f"dispatcher {replica} kept its {name}: the newer file is invalid: {state['error']}"
                  for replica, state in sorted(by_replica.items()) if state.get("error")]
    return found


def _quarantined(data_dir: str) -> dict[str, int]:
    from services.intake_email.quarantine import Quarantine

    counts: dict[str, int] = {}
    for entry in Quarantine(Path(data_dir) / "quarantine").entries():
        counts[entry.mailbox] = counts.get(entry.mailbox, 0) + 1
    return counts


def _failed(part: Any) -> bool:
    return isinstance(part, dict) and "error" in part


def problems(data: dict[str, Any]) -> list[str]:
    """What needs an operator's attention, one line each."""
    found = [f"cannot read {name}: {data[name]['error']}" for name in ("replicas", "agents", "tickets", "sla",
                                                                        "queues", "quarantined")
             if _failed(data.get(name))]
    if not _failed(data.get("replicas")):
        seen = {r["service"] for r in data["replicas"]}
        found += [f"no replica of {s} is running" for s in SERVICES if s not in seen]
    if not _failed(data.get("queues")):
        for row in data["queues"]:
            if row["queue"] == DEAD_LETTER_QUEUE and row["messages"]:
                found.append(f"{row['messages']} dead letters (ticketmesh dead-letters list)")
            elif row["queue"] != DEAD_LETTER_QUEUE and row["messages"] and not row["consumers"]:
                found.append(f"queue {row['queue']} holds {row['messages']} messages and has no consumer")
    if not _failed(data.get("quarantined")) and sum(data["quarantined"].values()):
        found.append(f"{sum(data['quarantined'].values())} mails in quarantine (ticketmesh quarantine list)")
    if not _failed(data.get("sla")) and data["sla"]["due_now"]:
        found.append(f"{data['sla']['due_now']} SLA clocks due and not fired yet (is sla_watcher keeping up?)")
    if "config" in data:
        found += ([f"cannot read config: {data['config']['error']}"] if _failed(data["config"])
                  else config_problems(data["config"]))
    return found


def dead_letter_count(queues: Any) -> Any:
    if _failed(queues):
        return "?"
    return next((r["messages"] for r in queues if r["queue"] == DEAD_LETTER_QUEUE), 0)


def format_text(data: dict[str, Any]) -> str:
    from shared.cli import table_lines

    lines: list[str] = []

    def section(title: str, part: Any, render: Callable[[Any], list[str]]) -> None:
        lines.append("")
        lines.append(title)
        lines.extend(["  " + line for line in (
            [f"unavailable: {part['error']}"] if _failed(part) else render(part))])

    section("REPLICAS", data["replicas"], lambda rows: table_lines(
        rows, ["service", "replica", "host", "pid", "http", "up_seconds", "seen_seconds_ago"]) if rows
        else ["none seen (no heartbeats in Redis)"])
    section("QUEUES (deepest first)", data["queues"], lambda rows: table_lines(
        rows[:QUEUES_SHOWN], ["queue", "messages", "ready", "unacked", "consumers"])
        + ([f"... {len(rows) - QUEUES_SHOWN} more (--json has all)"] if len(rows) > QUEUES_SHOWN else []))
    section("MAIL", data["quarantined"], lambda counts: [
        f"dead letters: {dead_letter_count(data['queues'])}",
        "quarantined: " + (", ".join(f"{m} {n}" for m, n in sorted(counts.items())) if counts else "0")])
    section("AGENTS", data["agents"], lambda counts: [
        ", ".join(f"{p} {n}" for p, n in sorted(counts.items())) if counts else "none known"])
    section("OPEN TICKETS", data["tickets"], lambda counts: [
        f"{sum(counts.values())} open" + (": " + ", ".join(f"{s} {n}" for s, n in sorted(counts.items()))
                                          if counts else "")])
    section("SLA", data["sla"], lambda s: [
        f"at risk {s['at_risk']}, due now {s['due_now']}, due in the next 15 min {s['due_next_15m']}"])
    lines.append("")
    lines.append("PROBLEMS" if data["problems"] else "no problems")
    lines.extend(f"  - {p}" for p in data["problems"])
    return "\n".join(lines).lstrip("\n")


def _progress(done: int, total: int) -> None:
    print(f"\rreading ticket views {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)


def _cmd_status(args: argparse.Namespace) -> int:
    common = CommonSettings.from_env()
    mgmt_url = os.environ.get("TM_RABBIT_MGMT_URL", DEFAULT_MGMT_URL)
    show_progress = not args.json and sys.stderr.isatty()
    data = gather(common, mgmt_url, now=time.time(), progress=_progress if show_progress else None)
    print(json.dumps(data, ensure_ascii=False, indent=2) if args.json else format_text(data))
    return 1 if data["problems"] else 0


def register(sub: Any) -> None:
    status = sub.add_parser("status", help="the mesh at a glance: replicas, queues, dead letters, agents, tickets, SLA")
    status.add_argument("--json", action="store_true", help="machine-readable, every queue")
    status.set_defaults(func=_cmd_status)
