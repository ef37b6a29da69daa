"""``ticketmesh customers``: the customer directory from the operator's side.

    ticketmesh customers import FILE.csv|.yaml [--dry-run] [--json]
                                      profiles from the company's records: identifiers (email, phone,
                                      external_user_id) and tier, language, name per row; every
                                      problem with its line number; importing the same file again
                                      changes nothing (format: shared/customer_directory.py)
    ticketmesh customers show IDENTIFIER [--json]
                                      one profile (by email, phone, kind:value or CU-n): identifiers,
                                      typed-in ones, aliases, maybe-links, tier, language, history

Uses ``TM_REDIS_URL`` and ``TM_PHONE_DEFAULT_REGION`` (numbers without a country code).
Exit codes: 0 done; 1 some rows had problems (the others were imported); 2 the file or the
identifier cannot be used, or no such customer.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from shared.config import CommonSettings, read
from shared.customer_directory import DirectoryFileError, parse_directory
from shared.customer_identity import ContactIdentifiers, Identifier, InvalidIdentifier, parse_lookup
from shared.customer_store import CustomerStore

REGION_VARIABLE = "TM_PHONE_DEFAULT_REGION"


def register(sub: Any) -> None:
    customers = sub.add_parser("customers", help="customer profiles: import the directory, show one customer")
    customers_sub = customers.add_subparsers(dest="action", required=True)
    imp = customers_sub.add_parser("import", help="profiles, tiers and languages from a CSV or YAML file")
    imp.add_argument("file", help="a .csv (header row) or .yaml file, one customer per row")
    imp.add_argument("--dry-run", action="store_true", help="check the file and say what would change; write nothing")
    imp.add_argument("--json", action="store_true", help="machine-readable")
    show = customers_sub.add_parser("show", help="one customer profile")
    show.add_argument("identifier", help="an email address, a phone number, kind:value, or a profile id (CU-12)")
    show.add_argument("--json", action="store_true", help="machine-readable")
    customers.set_defaults(func=run)


def _region() -> str:
    return read(os.environ, REGION_VARIABLE, "CN", str.upper)


def run(args: argparse.Namespace) -> int:
    from shared.redis_store import sync_client

    region = _region()
    if args.action == "import":
        try:
            with open(args.file, "rb") as handle:
                data = handle.read()
            directory = parse_directory(data, args.file, region)
        except OSError as exc:
            print(f"cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        except DirectoryFileError as exc:
            print(f"{args.file}: {exc}", file=sys.stderr)
            return 2
    client = sync_client(CommonSettings.from_env().redis_url)
    try:
        store = CustomerStore(client)
        if args.action == "import":
            return _import(store, args, directory)
        return _show(store, args.identifier, region, args.json)
    finally:
        client.close()


def _import(store: CustomerStore, args: argparse.Namespace, directory: Any) -> int:
    now = time.time()
    results: list[dict[str, Any]] = []
    for row in directory.rows:
        resolution = store.resolve(ContactIdentifiers(verified=row.identifiers), now=now, attributes=row.attributes,
                                   directory=True, dry_run=args.dry_run)
        outcome = "created" if resolution.created else "updated" if resolution.changed else "unchanged"
        results.append({"line": row.line, "outcome": outcome, "customer_id": resolution.profile_id,
                        "merged": list(resolution.merged),
                        "maybe": [{"other": m.other, "identifier": m.identifier.token, "reason": m.reason}
                                  for m in resolution.maybe],
                        "attributes": dict(resolution.attributes)})
    errors = [{"line": e.line, "error": e.message} for e in directory.errors]
    counts = {k: sum(1 for r in results if r["outcome"] == k) for k in ("created", "updated", "unchanged")}
    if args.json:
        print(json.dumps({"file": args.file, "dry_run": args.dry_run, "encoding": directory.encoding,
                          "counts": {**counts, "errors": len(errors)}, "rows": results, "errors": errors},
                         ensure_ascii=False, indent=2))
    else:
        verb = "would be" if args.dry_run else "were"
        for r in results:
            if r["outcome"] == "unchanged":
                continue
            extra = f", merged {', '.join(r['merged'])}" if r["merged"] else ""
            extra += "".join(f", maybe the same as {m['other']} ({m['reason']})" for m in r["maybe"])
            print(f"line {r['line']}: {r['outcome']} {r['customer_id'] or '(new profile)'}{extra}")
        for e in sorted(errors, key=lambda e: e["line"]):
            print(f"line {e['line']}: error: {e['error']}", file=sys.stderr)
        print(f"{len(results)} rows {verb} imported: {counts['created']} created, {counts['updated']} updated, "
              f"{counts['unchanged']} unchanged; {len(errors)} rows with errors"
              + (" (dry run: nothing written)" if args.dry_run else ""))
    return 1 if errors else 0


def _show(store: CustomerStore, text: str, region: str, as_json: bool) -> int:
    try:
        found = parse_lookup(text, region)
    except InvalidIdentifier as exc:
        print(f"not an identifier: {exc}", file=sys.stderr)
        return 2
    pid = store.owner(found) if isinstance(found, Identifier) else found
    profile = store.profile(pid) if pid else None
    if profile is None:
        carriers = store.carriers(found) if isinstance(found, Identifier) else []
        hint = f"; typed in by {', '.join(carriers)}" if carriers else ""
        print(f"no customer profile for {text}{hint}", file=sys.stderr)
        return 2
    history = store.history(profile.profile_id, now=time.time())
    data = profile.as_dict()
    data["history"] = {"open_tickets": [{"ticket_id": t.ticket_id, "channel": t.channel} for t in history.open],
                       "recent_tickets": history.recent_tickets, "recent_complaints": history.recent_complaints,
                       "last_agent_id": history.last_agent_id}
    if as_json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
        return 0
    lines = [("customer", profile.profile_id), ("name", profile.name or "-"), ("tier", profile.tier or "standard"),
             ("language", profile.language or "-"), ("company user", profile.external_user or "-"),
             ("identifiers", ", ".join(i.token for i in profile.identifiers) or "-"),
             ("typed in", ", ".join(i.token for i in profile.typed) or "-"),
             ("aliases", ", ".join(profile.aliases) or "-"),
             ("maybe", "; ".join(f"{m['other']} ({m['reason']}: {m['identifier']})" for m in profile.maybe) or "-"),
             ("open tickets", ", ".join(f"{t.ticket_id} ({t.channel})" for t in history.open) or "-"),
             ("recent", f"{history.recent_tickets} tickets, {history.recent_complaints} complaints (30 days)"),
             ("last agent", history.last_agent_id or "-")]
    width = max(len(k) for k, _ in lines) + 2
    for key, value in lines:
        print(f"{key}:".ljust(width) + value)
    return 0
