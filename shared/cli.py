"""``ticketmesh``: the operator's command line.

    ticketmesh dead-letters list [--json]        what failed, where and why
    ticketmesh dead-letters show N               one dead letter with its body
    ticketmesh dead-letters replay [--limit N]   republish to where each came from
    ticketmesh roster hash-password              make a password_hash for the roster file
    ticketmesh roster validate FILE              check a roster file
    ticketmesh config                            every environment variable with its default
    ticketmesh quarantine list [--mailbox M]     mail intake_email kept aside, and why
    ticketmesh quarantine show ID                one of them: the note and its headers
    ticketmesh quarantine reprocess ID...        put them back into their mailbox for intake
"""
from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from typing import Sequence

from shared.config import COMMON_VARIABLES, CommonSettings, ConfigError


def _print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


def _cmd_dead_letters(args: argparse.Namespace) -> int:
    from shared.dead_letter_ops import list_dead_letters, replay_dead_letters

    amqp_uri = CommonSettings.from_env().amqp_uri
    if args.action == "list":
        letters = list_dead_letters(amqp_uri, limit=args.limit)
        rows = [{"n": d.position, "failed_at": d.failed_at, "service": d.service, "event": d.routing_key,
                 "from": d.exchange, "reason": d.reason[:100]} for d in letters]
        if args.json:
            print(json.dumps(rows, ensure_ascii=False, indent=2))
        elif not rows:
            print("no dead letters")
        else:
            _print_table(rows, ["n", "failed_at", "service", "event", "from", "reason"])
        return 0
    if args.action == "show":
        letters = list_dead_letters(amqp_uri, limit=args.n)
        if len(letters) < args.n:
            print(f"there are only {len(letters)} dead letters", file=sys.stderr)
            return 2
        d = letters[args.n - 1]
        print(json.dumps({"reason": d.reason, "service": d.service, "queue": d.queue, "exchange": d.exchange,
                          "routing_key": d.routing_key, "failed_at": d.failed_at,
                          "body": d.body.decode("utf-8", "replace")}, ensure_ascii=False, indent=2))
        return 0
    count = 0
    for letter in replay_dead_letters(amqp_uri, limit=args.limit):
        count += 1
        print(f"replayed {letter.routing_key} to {letter.exchange}")
    print(f"{count} dead letters replayed")
    return 0


def _cmd_roster(args: argparse.Namespace) -> int:
    from shared.roster import RosterError, hash_password, load_roster

    if args.action == "hash-password":
        password = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass("password: ")
        if len(password) < 8:
            print("a password needs at least 8 characters", file=sys.stderr)
            return 2
        print(hash_password(password))
        return 0
    try:
        roster = load_roster(args.file)
    except RosterError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{args.file}: {len(roster.agents)} agents, valid")
    return 0


def _cmd_config(_args: argparse.Namespace) -> int:
    import importlib

    rows = [{"variable": v.name, "default": v.default, "used_by": "all", "meaning": v.help} for v in COMMON_VARIABLES]
    for svc in ("intake_email", "intake_chat", "intake_phone", "dispatcher", "sla_watcher", "notifier", "agent_desk"):
        try:
            module = importlib.import_module(f"services.{svc}.config")
        except ImportError:
            continue
        for v in getattr(module, "VARIABLES", ()):
            rows.append({"variable": v.name, "default": v.default, "used_by": svc, "meaning": v.help})
    _print_table(rows, ["variable", "default", "used_by", "meaning"])
    return 0


def _cmd_quarantine(args: argparse.Namespace) -> int:
    from pathlib import Path

    from shared.redis_store import sync_client
    from services.intake_email import automatic
    from services.intake_email.config import Settings
    from services.intake_email.imap import CONNECTION_ERRORS
    from services.intake_email.normalize import decode_header_value
    from services.intake_email.quarantine import Quarantine, UnknownEntry
    from services.intake_email.reprocess import CannotReprocess, reprocess
    from services.intake_email.store import IntakeEmailStore

    settings = Settings.from_env()
    quarantine = Quarantine(Path(settings.common.data_dir) / "quarantine")
    if args.action == "list":
        rows = [{"id": e.id, "quarantined_at": e.note.get("quarantined_at", ""), "size": e.note.get("size", ""),
                 "headers_only": "yes" if e.header_only else "", "reason": e.reason}
                for e in quarantine.entries(args.mailbox)]
        if args.json:
            print(json.dumps(rows, ensure_ascii=False, indent=2))
        elif not rows:
            print("nothing in quarantine")
        else:
            _print_table([{**r, "reason": r["reason"][:80]} for r in rows],
                         ["id", "quarantined_at", "size", "headers_only", "reason"])
        return 0
    if args.action == "show":
        try:
            entry = quarantine.get(args.id)
        except UnknownEntry as exc:
            print(exc, file=sys.stderr)
            return 2
        parsed = automatic.parse(entry.raw())
        headers = {name: decode_header_value(str(parsed.get(name))) for name in
                   ("From", "To", "Subject", "Date", "Message-ID") if parsed is not None and parsed.get(name)}
        print(json.dumps({"id": entry.id, **entry.note, "headers": headers, "file": str(entry.eml)},
                         ensure_ascii=False, indent=2))
        return 0
    by_name = {m.name: m for m in settings.mailboxes}
    client = sync_client(settings.common.redis_url)
    store = IntakeEmailStore(client)
    results, failed = [], 0
    try:
        for entry_id in args.ids:
            try:
                entry = quarantine.get(entry_id)
                done = reprocess(entry, by_name.get(entry.mailbox), store, quarantine)
            except (UnknownEntry, CannotReprocess, *CONNECTION_ERRORS) as exc:
                failed += 1
                results.append({"id": entry_id, "ok": False, "error": str(exc)})
                if not args.json:
                    print(f"cannot reprocess {exc}", file=sys.stderr)
                continue
            results.append({"id": done.id, "ok": True, "mailbox": done.mailbox, "folder": done.folder,
                            "uid": done.uid})
            if not args.json:
                print(f"{done.id}: back in {done.mailbox}/{done.folder}" + (f" as uid {done.uid}" if done.uid else ""))
    finally:
        client.close()
    if args.json:
        print(json.dumps(results, ensure_ascii=False, indent=2))
    else:
        print(f"{len(results) - failed} reprocessed, {failed} failed")
    return 2 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ticketmesh", description="ticketmesh operations")
    sub = parser.add_subparsers(dest="command", required=True)

    dl = sub.add_parser("dead-letters", help="list, show and replay dead letters")
    dl_sub = dl.add_subparsers(dest="action", required=True)
    dl_list = dl_sub.add_parser("list")
    dl_list.add_argument("--limit", type=int, default=100)
    dl_list.add_argument("--json", action="store_true")
    dl_show = dl_sub.add_parser("show")
    dl_show.add_argument("n", type=int)
    dl_replay = dl_sub.add_parser("replay")
    dl_replay.add_argument("--limit", type=int, default=None)
    dl.set_defaults(func=_cmd_dead_letters)

    roster = sub.add_parser("roster", help="agent roster tools")
    roster_sub = roster.add_subparsers(dest="action", required=True)
    roster_sub.add_parser("hash-password")
    validate = roster_sub.add_parser("validate")
    validate.add_argument("file")
    roster.set_defaults(func=_cmd_roster)

    quarantine = sub.add_parser("quarantine", help="mail intake_email kept aside: list, show, reprocess")
    q_sub = quarantine.add_subparsers(dest="action", required=True)
    q_list = q_sub.add_parser("list")
    q_list.add_argument("--mailbox", default=None)
    q_list.add_argument("--json", action="store_true")
    q_show = q_sub.add_parser("show")
    q_show.add_argument("id", help="<mailbox>/<uidvalidity>-<uid>")
    q_reprocess = q_sub.add_parser("reprocess")
    q_reprocess.add_argument("ids", nargs="+", metavar="ID")
    q_reprocess.add_argument("--json", action="store_true")
    quarantine.set_defaults(func=_cmd_quarantine)

    config = sub.add_parser("config", help="list environment variables and defaults")
    config.set_defaults(func=_cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"cannot reach a server: {exc} (is the mesh running? TM_AMQP_URI={os.environ.get('TM_AMQP_URI', 'default')})",
              file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
