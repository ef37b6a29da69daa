"""``ticketmesh roster reload`` and ``ticketmesh rules reload``: validate, then have every
dispatcher replica use the file now, and show who did.

    ticketmesh roster reload [FILE] [--timeout 30] [--json]
    ticketmesh rules reload [FILE] [--timeout 30] [--json]

FILE (default ``$TM_ROSTER_FILE`` / ``$TM_ROUTING_RULES_FILE``) is checked with the parser the
dispatcher uses; a bad file exits 2 naming the entry and field, and nothing is asked of anyone.
Otherwise every dispatcher replica (those with a live heartbeat, and any that start during the
wait) is asked to look at its files now (shared/config_reload.py), and the command waits until
each reports that it uses content with FILE's SHA-256; progress goes to standard error.

Exit 0: every replica uses it. Exit 1: some did not confirm within ``--timeout`` or use other
content (their mounted file differs, or their copy does not validate): they are named. Exit 2:
FILE is invalid. Exit 3 (from ``ticketmesh``): Redis cannot be reached.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from services.dispatcher.config import (
    DEFAULT_ROSTER_FILE,
    DEFAULT_ROUTING_RULES_FILE,
    ROSTER_FILE_KEY,
    ROUTING_RULES_FILE_KEY,
)
from shared import heartbeat
from shared.cli_format import cell, grid, print_json
from shared.config import CommonSettings
from shared.config_reload import (
    DIFFERENT,
    GONE,
    LOADED,
    ROSTER,
    RULES,
    ReloadStore,
    ReplicaOutcome,
    confirmed,
    outcomes,
)

DISPATCHER = "dispatcher"  # the heartbeat's service name (shared.events.DISPATCHER)
DEFAULT_TIMEOUT_SECONDS = 30.0
POLL_SECONDS = 0.2
PROGRESS_SECONDS = 2.0  # a progress line at least this often, and whenever the picture changes
COLUMNS = ["REPLICA", "STATUS", "SHA256", "VERSION", "LOADED_AT", "PATH", "ERROR"]


class InvalidFile(Exception):
    pass


def register_roster(roster_sub: Any) -> None:
    _add(roster_sub, ROSTER, ROSTER_FILE_KEY, DEFAULT_ROSTER_FILE)


def register_rules(rules_sub: Any) -> None:
    _add(rules_sub, RULES, ROUTING_RULES_FILE_KEY, DEFAULT_ROUTING_RULES_FILE)


def _add(sub: Any, name: str, env_key: str, default: str) -> None:
    parser = sub.add_parser("reload", help=f"validate the {name} file, have every dispatcher use it now, "
                                           "and wait until each says so")
    parser.add_argument("file", nargs="?", default=None, help=f"default: ${env_key} or {default}")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS,
                        help=f"seconds to wait for every replica (default {DEFAULT_TIMEOUT_SECONDS:g})")
    parser.add_argument("--json", action="store_true", help="machine-readable result on standard output")
    parser.set_defaults(func=lambda args: run(args, name, args.file or os.environ.get(env_key) or default))


def validate(name: str, path: str) -> tuple[str, str]:
    """(sha256 of the bytes validated, a one-line summary); raises InvalidFile with the parser's message."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidFile(f"cannot read {name} {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidFile(f"{name} {path} is not UTF-8: {exc}") from None
    if name == RULES:
        summary = _validate_rules(text, path)
    else:
        summary = _validate_roster(path)
        if Path(path).read_bytes() != raw:  # load_roster reads the file itself: it must be what was hashed
            raise InvalidFile(f"roster {path} changed while it was being checked: run the command again")
    return hashlib.sha256(raw).hexdigest(), summary


def _validate_rules(text: str, path: str) -> str:
    from services.dispatcher.classify import RulesError
    from services.dispatcher.policy import PolicyError

    with warnings.catch_warnings():  # the service module imports nameko, which warns about eventlet
        warnings.simplefilter("ignore")
        from services.dispatcher.service import parse_routing  # what ConfigFiles parses the file with
    try:
        rules, policy = parse_routing(text, path)
    except (RulesError, PolicyError) as exc:
        raise InvalidFile(str(exc)) from None
    return f"{len(rules.rules)} rules, routing policy {policy.name!r}"


def _validate_roster(path: str) -> str:
    from shared.roster import RosterError, load_roster

    try:
        roster = load_roster(path)  # what ConfigFiles parses the roster with
    except RosterError as exc:
        raise InvalidFile(str(exc)) from None
    return f"{len(roster.agents)} agents"


def run(args: argparse.Namespace, name: str, path: str) -> int:
    try:
        digest, summary = validate(name, path)
    except InvalidFile as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        print("nothing was reloaded", file=sys.stderr)
        return 2
    print(f"{path}: valid ({summary}), sha256 {digest[:12]}", file=sys.stderr)
    from shared.redis_store import sync_client

    client = sync_client(CommonSettings.from_env().redis_url)
    try:
        result = reload_and_wait(client, name, digest, timeout=args.timeout, clock=time.monotonic,
                                 sleep=time.sleep, progress=lambda line: print(line, file=sys.stderr))
    finally:
        client.close()
    rows = [_row(r) for r in result["replicas"]]
    ok = result["ok"]
    if args.json:
        print_json({"file": str(path), "config": name, "sha256": digest, "request": result["request"], "ok": ok,
                    "replicas": rows})
    elif rows:
        print("\n".join(grid([_cells(r) for r in rows], COLUMNS, right=(3,))))
    if not result["replicas"]:
        print("no dispatcher replica is running (no heartbeat in Redis): nothing confirmed the reload",
              file=sys.stderr)
        return 1
    if not ok:
        bad = [r for r in result["replicas"] if r.status not in (LOADED, GONE)]
        print(f"not confirmed within {args.timeout:g}s: " + ", ".join(f"{r.replica} ({_why(r)})" for r in bad),
              file=sys.stderr)
        return 1
    return 0


def reload_and_wait(client: Any, name: str, digest: str, *, timeout: float, clock: Callable[[], float],
                    sleep: Callable[[float], None], progress: Callable[[str], None]) -> dict:
    """Ask, then poll the replicas' reports until all use ``digest`` or ``timeout`` passes."""
    store = ReloadStore(client)
    live = _live(client)
    if not live:
        return {"request": None, "replicas": [], "ok": False}
    request = store.request()
    progress(f"asked {len(live)} dispatcher replica(s) to reload ({name}, request {request})")
    replicas = list(live)
    started = clock()
    deadline = started + timeout
    last_line, last_at = "", float("-inf")
    while True:
        live = _live(client)
        replicas += [r for r in live if r not in replicas]  # one that started meanwhile must confirm too
        result = outcomes(replicas, store.reports(replicas), name=name, request=request, sha256=digest, live=live)
        if replicas and confirmed(result) or clock() >= deadline:
            break
        line = _progress_line(result)
        if line != last_line or clock() - last_at >= PROGRESS_SECONDS:
            progress(f"{line} [{clock() - started:.0f}s]")
            last_line, last_at = line, clock()
        sleep(POLL_SECONDS)
    return {"request": request, "replicas": result, "ok": bool(replicas) and confirmed(result)}


def _live(client: Any) -> list[str]:
    return [r["replica"] for r in heartbeat.replicas(client) if r.get("service") == DISPATCHER and r.get("replica")]


def _progress_line(result: list[ReplicaOutcome]) -> str:
    done = sum(r.status == LOADED for r in result)
    pending = [f"{r.replica} ({_why(r)})" for r in result if r.status not in (LOADED, GONE)]
    return f"{done}/{len(result)} confirmed" + (f"; waiting for {', '.join(pending)}" if pending else "")


def _why(r: ReplicaOutcome) -> str:
    if r.status == DIFFERENT:
        return f"uses {r.sha256[:12]}" + (f", its file is refused: {r.error}" if r.error else ", its file differs")
    return "no answer"


def _row(r: ReplicaOutcome) -> dict:
    return {"replica": r.replica, "status": r.status, "sha256": r.sha256, "version": r.version,
            "loaded_at": _iso(r.loaded_at), "path": r.path, "error": r.error}


def _cells(row: dict) -> list[str]:
    return [cell(row["replica"], 40), row["status"], row["sha256"][:12],
            "" if row["version"] is None else str(row["version"]), row["loaded_at"] or "",
            cell(row["path"], 60), cell(row["error"] or "", 80)]


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")
