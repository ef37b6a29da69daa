"""``ticketmesh notifications``: mail the notifier gave up on, and sending it again.

    ticketmesh notifications dead [--limit N] [--json]   dead letters, newest first: failed (the relay
                                                         refused it, 5xx) or dead (attempts spent)
    ticketmesh notifications show ID [--raw]             one notification: state, attempts, last error,
                                                         its headers (--raw: the whole mail as sent)
    ticketmesh notifications replay ID... | --all        send dead letters again from attempt 1

Reads and writes the notifier's outbox in Redis (``TM_REDIS_URL``); a running notifier picks a
replayed mail up within a second. A replay also lifts the suppression our relay's refusal put
on the address (a bounce's stays: ``replay`` says so, and the mail fails again until it runs
out). Exit 2: an unknown id, or an id that is not a dead letter.
"""
from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import json
import sys
import time
from datetime import datetime, timezone
from typing import Any

from services.notifier.loop_safety import BOUNCED_ADDRESS
from services.notifier.outbox import DEAD, FAILED, Outbox, Record
from services.notifier.store import REFUSED, NotificationStore
from shared.cli_format import cell
from shared.config import CommonSettings
from shared.logging import mask

HEADERS_SHOWN = ("From", "To", "Subject", "Date", "Message-ID", "In-Reply-To", "Auto-Submitted")


def register(sub: Any) -> None:
    notifications = sub.add_parser("notifications", help="dead-lettered notifications: list, show, replay")
    n_sub = notifications.add_subparsers(dest="action", required=True)
    dead = n_sub.add_parser("dead", help="notifications the notifier gave up on, newest first")
    dead.add_argument("--limit", type=int, default=100)
    dead.add_argument("--json", action="store_true", help="machine-readable")
    show = n_sub.add_parser("show", help="one notification: state, attempts, errors, headers")
    show.add_argument("id", help="notification id (from `dead`)")
    show.add_argument("--raw", action="store_true", help="print the whole mail as it is sent")
    replay = n_sub.add_parser("replay", help="send dead letters again from attempt 1")
    replay.add_argument("ids", nargs="*", metavar="ID")
    replay.add_argument("--all", action="store_true", help="every dead letter")
    notifications.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "replay" and not args.ids and not args.all:
        print("name the notifications to replay, or --all", file=sys.stderr)
        return 2
    return asyncio.run(_run(args, CommonSettings.from_env().redis_url))


async def _run(args: argparse.Namespace, redis_url: str) -> int:
    from shared.redis_store import async_client

    client = async_client(redis_url)
    try:
        outbox, store = Outbox(client), NotificationStore(client)
        if args.action == "dead":
            return await _dead(outbox, args.limit, args.json)
        if args.action == "show":
            return await _show(outbox, store, args.id, args.raw)
        return await _replay(outbox, store, args.ids, args.all)
    finally:
        await client.aclose()


def _when(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")



def _summary(r: Record) -> dict[str, Any]:
    return {"id": r.notification_id, "state": r.state, "failed_at": _when(r.failed_at), "kind": r.kind,
            "ticket": r.ticket_id or "", "recipient": mask(r.recipient), "attempts": r.attempts, "reason": r.reason}


async def _dead(outbox: Outbox, limit: int, as_json: bool) -> int:
    rows = [_summary(r) for r in await outbox.dead(limit)]
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print("no dead notifications")
        return 0
    columns = ["id", "state", "failed_at", "kind", "ticket", "recipient", "attempts", "reason"]
    cells = [{c: cell(r[c], 100) for c in columns} for r in rows]
    widths = {c: max(len(c), *(len(r[c]) for r in cells)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for r in cells:
        print("  ".join(r[c].ljust(widths[c]) for c in columns).rstrip())
    return 0


async def _show(outbox: Outbox, store: NotificationStore, notification_id: str, raw: bool) -> int:
    record = await outbox.get(notification_id)
    if record is None:
        print(f"no notification {notification_id}", file=sys.stderr)
        return 2
    if raw:
        if record.raw is None:
            print(f"{notification_id} was sent; its body is no longer kept", file=sys.stderr)
            return 2
        sys.stdout.write(record.raw.decode("utf-8", "replace"))
        return 0
    suppressed = await store.suppression(record.recipient)
    info: dict[str, Any] = {
        **_summary(record), "recipient": record.recipient, "created_at": _when(record.created_at),
        "sent_at": _when(record.sent_at), "last_error": record.last_error, "announced": record.announced,
        "unknown_outcomes": record.unknown_outcomes, "trace_id": record.trace_id, "message_id": record.message_id,
        "address_suppressed": {"why": suppressed[0], "seconds_left": suppressed[1]} if suppressed else None,
    }
    if record.raw is not None:
        parsed = email.message_from_bytes(record.raw, policy=email.policy.default)
        info["headers"] = {h: cell(parsed[h], 300) for h in HEADERS_SHOWN if parsed[h] is not None}
        info["size"] = len(record.raw)
    print(json.dumps(info, ensure_ascii=False, indent=2))
    return 0


async def _replay(outbox: Outbox, store: NotificationStore, ids: list[str], everything: bool) -> int:
    if everything:
        ids = [r.notification_id for r in await outbox.dead(limit=1_000_000)]
    problems = replayed = 0
    for notification_id in ids:
        record = await outbox.get(notification_id)
        if record is None or record.state not in (FAILED, DEAD):
            print(f"{notification_id}: " + ("no such notification" if record is None else
                                              f"not a dead letter (state {record.state})"), file=sys.stderr)
            problems += 1
            continue
        if await store.lift_refusal(record.recipient):
            print(f"{notification_id}: lifted the suppression of {mask(record.recipient)} our relay's refusal set")
        suppressed = await store.suppression(record.recipient)
        await outbox.replay(notification_id, time.time())
        replayed += 1
        note = ""
        if suppressed and suppressed[0] != REFUSED:
            note = (f" (but {mask(record.recipient)} is suppressed after a {suppressed[0]} bounce for "
                    f"{suppressed[1] // 3600} more hours: it will fail as {BOUNCED_ADDRESS})")
        print(f"{notification_id}: queued again ({record.kind}, {mask(record.recipient)}){note}")
    print(f"{replayed} replayed" + (f", {problems} not replayed" if problems else ""))
    return 2 if problems else 0
