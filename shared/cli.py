"""``ticketmesh``: the operator's command line.

    ticketmesh dead-letters list [--json]        what failed, where and why
    ticketmesh dead-letters show N               one dead letter with its body
    ticketmesh dead-letters replay [--limit N]   republish to where each came from
    ticketmesh roster hash-password              make a password_hash for the roster file
    ticketmesh roster validate FILE              check a roster file
    ticketmesh roster reload [FILE] [--json]     validate, have every dispatcher use it now, show who does
    ticketmesh config                            every environment variable with its default
    ticketmesh email parse FILE.eml [--json]     what intake makes of one raw message (- reads stdin)
    ticketmesh quarantine list [--mailbox M]     mail intake_email kept aside, and why
    ticketmesh quarantine show ID                one of them: the note and its headers
    ticketmesh quarantine reprocess ID...        put them back into their mailbox for intake
    ticketmesh rules validate [FILE]             check the classification rules
    ticketmesh rules reload [FILE] [--json]      validate, have every dispatcher use them now, show who does
    ticketmesh rules explain --subject S --text T  how a sample ticket is classified, and why
    ticketmesh simulate --trace T --staffing S   replay a workload through the routing policies, offline
    ticketmesh dispatch explain TICKET           a ticket's routing decisions (also: queues, agents)
    ticketmesh report [--from --to --by --json]  first response, resolution, SLA, breaches, escalations, CSAT
    ticketmesh trace TICKET [--json]             one ticket's path: its events in order, with gaps
    ticketmesh phone validate [FILE]             check the phone policy (per line/queue)
    ticketmesh phone import-cdr FILE [--dry-run] backfill tickets from an Asterisk Master.csv (idempotent)
    ticketmesh notifications dead                mail the notifier gave up on (also: show ID, replay ID...|--all)
    ticketmesh status [--json]                   replicas, queues, dead letters, quarantine, agents, tickets, SLA
    ticketmesh customers import FILE [--dry-run] customer profiles, tiers, languages from CSV/YAML
    ticketmesh customers show IDENTIFIER         one customer profile: identifiers, links, history
"""
from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from typing import Sequence

from shared.config import COMMON_VARIABLES, CommonSettings, ConfigError


def table_lines(rows: list[dict], columns: list[str]) -> list[str]:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip()]
    lines += ["  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns).rstrip() for row in rows]
    return lines


def _print_table(rows: list[dict], columns: list[str]) -> None:
    print("\n".join(table_lines(rows, columns)))


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


# --- email parse ---------------------------------------------------------------------------

EMAIL_TEXT_LINES = 15  # of text and reply_text in the human-readable view; --json has all
EMAIL_LINE_CHARS = 160


def _cmd_email(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from services.intake_email.config import DEFAULT_MAIL_FROM
    from services.intake_email.report import describe

    try:
        raw = sys.stdin.buffer.read() if args.file == "-" else open(args.file, "rb").read()
    except OSError as exc:
        print(f"cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    our_address = (args.our_address or os.environ.get("TM_MAIL_FROM") or DEFAULT_MAIL_FROM).strip().lower()
    # The clock is read here, at the edge; describe() itself is pure.
    report = describe(raw, our_address=our_address, received_at=datetime.now(timezone.utc))
    if args.json:
        out = json.dumps(report, ensure_ascii=False, indent=2)
    else:
        out = _email_report_text(args.file, report)
    # Lone surrogates (undecodable bytes) cannot be written to a UTF-8 terminal: replace them.
    print(out.encode("utf-8", "replace").decode("utf-8"))
    return 0


def _email_report_text(source: str, report: dict) -> str:
    """Aligned ``key: value`` lines, the verdict first: what intake would do with this mail and why."""
    lines: list[tuple[str, str]] = [("file", "<stdin>" if source == "-" else source)]
    if "quarantined" in report:
        lines.append(("verdict", f"quarantined: {report['quarantined']}"))
    elif report.get("automatic"):
        lines.append(("verdict", f"no ticket, kept in quarantine as {report['automatic']}"))
    elif report.get("thread_candidates"):
        lines.append(("verdict", "a follow-up if a thread candidate (or the subject tag) is one of our tickets, "
                                 "else a new ticket"))
    else:
        lines.append(("verdict", "a new ticket unless the subject tag or the address names one of ours "
                                 "(no thread candidates)"))
    for key in ("from_email", "from_name", "subject", "message_id"):
        if key in report:
            lines.append((key, _one_line(report[key])))
    for key in ("in_reply_to", "references"):
        if key in report:
            lines.append((key, ", ".join(report[key]) or "-"))
    if "thread_candidates" in report:
        candidates = report["thread_candidates"]
        lines.append(("thread_candidates",
                      " > ".join(f"<{c}>" for c in candidates) + "  (tried in this order)" if candidates else "none"))
    if "auto_reply" in report:
        lines.append(("auto_reply", f'"{report["auto_reply"]}"' if report["auto_reply"] else "false"))
    if "bounce" in report:
        lines.append(("bounce", _bounce_line(report["bounce"])))
    if "attachments" in report:
        attachments = report["attachments"]
        lines.append(("attachments", f"{len(attachments)}" if attachments else "none"))
        for item in attachments:
            lines.append(("", "- " + _attachment_line(item)))
    if "charset_flags" in report:
        lines.append(("charset_flags", ", ".join(report["charset_flags"]) or "none (every label was right)"))
    if "html_sanitized" in report:
        html = report["html_sanitized"]
        lines.append(("html_sanitized", "none (no HTML body)" if html is None else f"{len(html)} characters"))
    if "reply_text" in report:
        lines.extend(_text_block("reply_text", report["reply_text"]))
    if "text" in report:
        same = report["text"] == report.get("reply_text")
        lines.extend([("text", "same as reply_text (nothing quoted)")] if same else _text_block("text", report["text"]))
    width = max(len(key) for key, _ in lines) + 1
    return "\n".join(((f"{key}:" if key else "").ljust(width + 1) + value).rstrip() for key, value in lines)


def _printable(value: object) -> str:
    # Mail is written by strangers: no terminal escape sequences or other control characters.
    return "".join(ch if ch.isprintable() or ch in "\n\t" else "\ufffd" for ch in str(value))


def _one_line(value: object) -> str:
    if value is None:
        return "-"
    text = " ".join(_printable(value).split())
    return text if len(text) <= EMAIL_LINE_CHARS * 2 else text[:EMAIL_LINE_CHARS * 2] + "…"


def _bounce_line(bounce: object) -> str:
    if not bounce:
        return "false"
    assert isinstance(bounce, dict)
    hard = {True: "hard", False: "soft"}.get(bounce.get("hard"), "hard/soft unknown")
    recipients = ", ".join(bounce.get("recipients") or []) or "recipients unknown"
    return _one_line(f"{recipients}; status {bounce.get('status') or '-'} ({hard}); "
                     f"original message <{bounce.get('original_message_id') or '?'}>; "
                     f"reason: {bounce.get('reason') or '-'}")


def _attachment_line(item: dict) -> str:
    size = item.get("size")
    details = [item.get("content_type") or "type unknown", f"{size} bytes" if size is not None else "size unknown"]
    if item.get("content_id"):
        details.append(f"cid:{item['content_id']}")
    return _one_line(f"{item.get('filename') or '(no filename)'} ({', '.join(details)})")


def _text_block(key: str, text: str) -> list[tuple[str, str]]:
    if not text:
        return [(key, "(empty)")]
    all_lines = _printable(text).split("\n")
    shown = [line if len(line) <= EMAIL_LINE_CHARS else line[:EMAIL_LINE_CHARS] + "…"
             for line in all_lines[:EMAIL_TEXT_LINES]]
    block = [(key if i == 0 else "", line) for i, line in enumerate(shown)]
    if len(all_lines) > EMAIL_TEXT_LINES:
        block.append(("", f"… {len(all_lines) - EMAIL_TEXT_LINES} more lines ({len(text)} characters; --json shows all)"))
    return block
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
    from services.dispatcher import reload_cli  # ticketmesh roster reload (rules reload: rules_cli)

    reload_cli.register_roster(roster_sub)
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

    email_cmd = sub.add_parser("email", help="email intake tools")
    email_sub = email_cmd.add_subparsers(dest="action", required=True)
    parse = email_sub.add_parser("parse", help="what intake makes of one raw message (never fails on its content)")
    parse.add_argument("file", help="a raw RFC 5322 message (.eml), or - for standard input")
    parse.add_argument("--json", action="store_true", help="every field, untruncated, as JSON")
    parse.add_argument("--our-address", default=None,
                       help="our support address, to recognise our own mail (default: TM_MAIL_FROM)")
    email_cmd.set_defaults(func=_cmd_email)

    from services.dispatcher import rules_cli  # ticketmesh rules validate|explain

    rules_cli.register(sub)
    from services.dispatcher import simulate_cli  # ticketmesh simulate

    simulate_cli.register(sub)
    from services.dispatcher import dispatch_cli  # ticketmesh dispatch explain|queues|agents

    dispatch_cli.register(sub)
    from services.agent_desk import report_cli  # ticketmesh report, ticketmesh trace

    report_cli.register(sub)
    from services.intake_phone import phone_cli  # ticketmesh phone validate|import-cdr

    phone_cli.register(sub)
    from services.notifier import notifications_cli  # ticketmesh notifications dead|show|replay

    notifications_cli.register(sub)
    from shared import status_cli  # ticketmesh status

    status_cli.register(sub)
    from shared import customers_cli  # ticketmesh customers import|show

    customers_cli.register(sub)
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
