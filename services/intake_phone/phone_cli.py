"""``ticketmesh phone``: check the phone policy, backfill tickets from call detail records.

    ticketmesh phone validate [FILE]            exit 0 valid, 2 with the file, line and field
    ticketmesh phone import-cdr FILE [--dry-run] [--json] [--timezone TZ] [--policy FILE]

``import-cdr`` reads an Asterisk ``Master.csv`` (see services.intake_phone.cdr), groups its
rows into calls by uniqueid and puts each inbound call through the same policy as the CTI
webhook: missed calls become callback tickets (folded per caller), voicemails tickets; answered
calls have no wrap-up in a CDR and become nothing. Each call is merged and settled on its own
(one transaction per call), so a bad row or an interruption leaves no call half-done, and a
second run of the same file changes nothing (idempotent by uniqueid). Bad rows are reported
with their line numbers and the rest is imported. ``--dry-run`` checks the file and says what
would be opened, writing nothing and needing no server (folding counted within the file only).

Progress goes to standard error every ``PROGRESS_EVERY`` calls; the summary (``--json``: one
object) to standard output. Exit status: 0 imported, 2 some rows (or the whole file) refused,
3 a server could not be reached (run it again: what was done stays done).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections import Counter
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from shared.config import ConfigError
from shared.logging import configure_logging

from services.intake_phone import calls
from services.intake_phone.cdr import CdrBatch, CdrFileError, calls_from_rows, decode, read_rows
from services.intake_phone.config import DEFAULT_POLICY_FILE, CallSettings
from services.intake_phone.policy import PhonePolicy, PhonePolicyError, load_policy

PROGRESS_EVERY = 500       # calls between progress lines
ERRORS_SHOWN = 50          # bad rows listed in the text summary (--json lists all)
CONNECT_TIMEOUT_SECONDS = 10.0
EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 2, 3


def register(sub: Any) -> None:
    phone = sub.add_parser("phone", help="phone intake: check the policy file, import call detail records")
    phone_sub = phone.add_subparsers(dest="action", required=True)
    validate = phone_sub.add_parser("validate", help="check a phone policy file (exit 2 with the line and field)")
    validate.add_argument("file", nargs="?", default=None,
                          help=f"default: $TM_PHONE_POLICY_FILE or {DEFAULT_POLICY_FILE}")
    imp = phone_sub.add_parser("import-cdr", help="backfill tickets from an Asterisk Master.csv (idempotent)")
    imp.add_argument("file", help="Master.csv written by cdr_csv with loguniqueid=yes")
    imp.add_argument("--dry-run", action="store_true", help="check and count, write nothing, need no server")
    imp.add_argument("--json", action="store_true", help="the summary as one JSON object")
    imp.add_argument("--timezone", default=None,
                     help="zone of the file's times (default: the policy's cdr.timezone; UTC for usegmtime=yes)")
    imp.add_argument("--policy", default=None, help=f"phone policy (default: $TM_PHONE_POLICY_FILE or "
                                                    f"{DEFAULT_POLICY_FILE})")
    phone.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "validate":
        return _validate(args.file or os.environ.get("TM_PHONE_POLICY_FILE") or DEFAULT_POLICY_FILE)
    return _import(args)


def _validate(path: str) -> int:
    region = os.environ.get("TM_PHONE_DEFAULT_REGION", "CN").upper()
    try:
        policy = load_policy(path, default_region=region)
    except PhonePolicyError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"{path}: {len(policy.lines)} lines, valid (defaults: missed {policy.default.missed}, voicemail "
          f"{policy.default.voicemail}, answered {policy.default.answered}, fold "
          f"{policy.default.fold_window_seconds // 60} min)")
    return EXIT_OK


def _import(args: argparse.Namespace) -> int:
    # Standard output is the summary; the services' log lines (warnings only: an info line per
    # call would bury the progress) go to standard error. A process that routes structlog through
    # stdlib logging already (a program calling main()) keeps its own set-up; structlog's
    # default, or what structlog.testing.capture_logs leaves behind, prints to standard output.
    if not isinstance(structlog.get_config().get("logger_factory"), structlog.stdlib.LoggerFactory):
        configure_logging("phone_import", level="WARNING", fmt="console")
    try:
        settings = CallSettings.from_env(policy_file=args.policy)
        zone = ZoneInfo(args.timezone or settings.policy.cdr_timezone)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except (ZoneInfoNotFoundError, ValueError):
        print(f"--timezone {args.timezone!r} is not a time zone name (e.g. Asia/Shanghai, UTC)", file=sys.stderr)
        return EXIT_REFUSED
    try:
        with open(args.file, "rb") as handle:
            text = decode(handle.read())
    except OSError as exc:
        print(f"cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_REFUSED
    try:
        batch = calls_from_rows(read_rows(text, zone), settings.policy, settings.default_region)
    except CdrFileError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    if args.dry_run:
        outcomes = _plan(batch, settings)
        unreachable = None
    else:
        outcomes, unreachable = asyncio.run(_apply(batch, settings))
    summary = _summary(args.file, batch, outcomes, dry_run=args.dry_run, unreachable=unreachable)
    _print_summary(summary, as_json=args.json)
    if unreachable:
        return EXIT_UNREACHABLE
    return EXIT_REFUSED if batch.errors else EXIT_OK


def _started(call: Any) -> datetime:
    assert call.start is not None
    return call.start


def _progress(done: int, total: int) -> None:
    if done % PROGRESS_EVERY == 0 or done == total:
        print(f"progress: {done}/{total} calls", file=sys.stderr, flush=True)


def _plan(batch: CdrBatch, settings: CallSettings) -> Counter:
    """What an import into an empty mesh would do (no Redis: folds are counted within the file)."""
    policy: PhonePolicy = settings.policy
    outcomes: Counter = Counter()
    last_by_caller: dict[tuple[str, str], float] = {}
    for done, call in enumerate(sorted(batch.calls, key=_started), start=1):
        events = call.events()
        if any(e.from_number and e.from_number.value in settings.blocked_numbers for e, _ in events):
            outcomes["blocked"] += 1
            continue
        state = None
        for event, when in events:
            state = calls.apply(state, event, now=when, trace_id="dry-run")
        assert state is not None
        line = policy.line_for(queue=state.queue, to_number=state.to_number, context=state.context)
        kind, why = calls.ticket_kind(state, line)
        if kind is None:
            outcomes[f"no_ticket:{why}"] += 1
        else:
            at = calls.contact_time(state).timestamp()
            key = (line.name, state.from_number)
            foldable = kind in calls.FOLDABLE and line.fold_window_seconds > 0 and state.callable_back
            previous = last_by_caller.get(key) if foldable else None
            outcomes["folded" if previous is not None and at - previous <= line.fold_window_seconds
                     else f"opened:{kind}"] += 1
            if foldable:
                last_by_caller[key] = at
        _progress(done, len(batch.calls))
    return outcomes


async def _apply(batch: CdrBatch, settings: CallSettings) -> tuple[Counter, str | None]:
    import aio_pika

    from shared.amqp import EventPublisher
    from shared.intake_ledger import AsyncIntakeLedger
    from shared.redis_store import async_client

    from services.intake_phone.intake import SERVICE_NAME, CallIntake
    from services.intake_phone.store import PhoneStore

    outcomes: Counter = Counter()
    if not batch.calls:
        return outcomes, None
    redis_client = async_client(settings.common.redis_url)
    connection = None
    try:
        try:
            await asyncio.wait_for(redis_client.ping(), CONNECT_TIMEOUT_SECONDS)
            connection = await aio_pika.connect(settings.common.amqp_uri, timeout=CONNECT_TIMEOUT_SECONDS)
            publisher = EventPublisher(connection, SERVICE_NAME)  # type: ignore[arg-type]
            await publisher.start()
        except (OSError, asyncio.TimeoutError, aio_pika.exceptions.AMQPError) as exc:
            return outcomes, f"cannot reach a server: {exc!r}"
        intake = CallIntake(PhoneStore(redis_client), AsyncIntakeLedger(redis_client, SERVICE_NAME), publisher,
                            lambda: settings.policy, settings.blocked_numbers)
        # Oldest first: a caller's first missed call opens the ticket the later ones fold into.
        ordered = sorted(batch.calls, key=_started)
        for done, call in enumerate(ordered, start=1):
            try:
                settled = await intake.handle(call.events(), now=datetime.now(timezone.utc))
            except Exception as exc:  # noqa: BLE001 - whatever stopped it, the calls so far are done
                from shared.aio_service import BrokerUnavailable
                from shared.errors import is_transient

                if isinstance(exc, BrokerUnavailable) or is_transient(exc):
                    return outcomes, f"stopped at the call of line {call.lines[0]} (uniqueid {call.call_id}): {exc}"
                raise
            outcomes[f"opened:{settled.kind}" if settled.result == "opened" else settled.result] += 1
            _progress(done, len(ordered))
        return outcomes, None
    finally:
        if connection is not None:
            await connection.close()
        await redis_client.aclose()


def _summary(path: str, batch: CdrBatch, outcomes: Counter, *, dry_run: bool, unreachable: str | None) -> dict:
    opened = sum(n for k, n in outcomes.items() if k.startswith("opened"))
    return {
        "file": path, "dry_run": dry_run, "rows": batch.rows + len(batch.errors), "calls": len(batch.calls),
        "tickets_opened": opened, "folded": outcomes.get("folded", 0),
        "already_imported": outcomes.get("already_ticketed", 0) + outcomes.get("voicemail_added", 0),
        "outcomes": dict(sorted(outcomes.items())), "skipped_rows": dict(sorted(batch.skipped.items())),
        "errors": [{"line": e.line, "error": e.message} for e in batch.errors],
        "stopped": unreachable,
    }


def _print_summary(summary: dict, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, ensure_ascii=False, indent=2))
    else:
        verb = "would open" if summary["dry_run"] else "opened"
        print(f"{summary['file']}: {summary['rows']} rows, {summary['calls']} inbound calls; {verb} "
              f"{summary['tickets_opened']} tickets, {summary['folded']} calls folded into earlier tickets, "
              f"{summary['already_imported']} already imported")
        for key, count in summary["outcomes"].items():
            print(f"  {key}: {count}")
        for key, count in summary["skipped_rows"].items():
            print(f"  skipped rows ({key}): {count}")
        errors = summary["errors"]
        for error in errors[:ERRORS_SHOWN]:
            print(f"line {error['line']}: {error['error']}", file=sys.stderr)
        if len(errors) > ERRORS_SHOWN:
            print(f"… {len(errors) - ERRORS_SHOWN} more bad rows (--json lists all)", file=sys.stderr)
        if errors:
            print(f"{len(errors)} rows refused; the others were {'checked' if summary['dry_run'] else 'imported'}",
                  file=sys.stderr)
    if summary["stopped"]:
        print(f"import stopped: {summary['stopped']}; run it again to finish (nothing is done twice)",
              file=sys.stderr)
