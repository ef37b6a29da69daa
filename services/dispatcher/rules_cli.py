"""``ticketmesh rules``: check the classification rules and see how a sample ticket fares.

    ticketmesh rules validate [FILE]                     exit 0 valid, 2 with the file, rule and field
                                                         (the routing: policy section is checked too)
    ticketmesh rules reload [FILE] [--timeout S] [--json]  validate, then every dispatcher uses it now
                                                         (services/dispatcher/reload_cli.py)
    ticketmesh rules explain [--file F] --subject S --text T [--channel email] [--sender a@b]
                             [--tier vip] [--language zh] [--mailbox M] [--queue Q]
                             [--repeat N] [--complaints N] [--json]

``explain`` prints the result, the signals with their evidence, then every rule: matched (on
what, and what it sets), the first condition that failed, or not evaluated after a ``stop``.
``--text -`` reads the text from standard input. Nothing here needs the mesh to be running.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from services.dispatcher.classify import RulesError, explain, load_rules
from services.dispatcher.config import DEFAULT_ROUTING_RULES_FILE, ROUTING_RULES_FILE_KEY
from services.dispatcher.customers import CustomerHistory
from services.dispatcher.policy import PolicyError, load_policy
from shared.cli_format import cell

VALUE_CHARS = 100  # per cell in the table; --json has everything


def _default_file() -> str:
    return os.environ.get(ROUTING_RULES_FILE_KEY) or DEFAULT_ROUTING_RULES_FILE


def register(sub: Any) -> None:
    """Add ``rules validate`` and ``rules explain`` to the ``ticketmesh`` sub-parsers."""
    rules = sub.add_parser("rules", help="classification rules: validate a file, explain a sample ticket")
    rules_sub = rules.add_subparsers(dest="action", required=True)
    validate = rules_sub.add_parser("validate", help="check a rules file (exit 2 with the rule and field)")
    validate.add_argument("file", nargs="?", default=None,
                          help=f"default: ${ROUTING_RULES_FILE_KEY} or {DEFAULT_ROUTING_RULES_FILE}")
    from services.dispatcher import reload_cli  # ticketmesh rules reload

    reload_cli.register_rules(rules_sub)
    ex = rules_sub.add_parser("explain", help="how a sample ticket is classified, and why")
    ex.add_argument("--file", default=None, help=f"rules file (default: ${ROUTING_RULES_FILE_KEY} or "
                                                 f"{DEFAULT_ROUTING_RULES_FILE})")
    ex.add_argument("--channel", choices=("email", "chat", "phone"), default="email")
    ex.add_argument("--subject", default="")
    ex.add_argument("--text", default="", help="the ticket's text; - reads standard input")
    ex.add_argument("--sender", default=None, help="the customer's address")
    ex.add_argument("--tier", default=None, help="customer tier, e.g. vip (default: standard)")
    ex.add_argument("--language", default=None, help="the customer's language, e.g. zh-CN (default: detected)")
    ex.add_argument("--mailbox", default=None, help="email intake mailbox the ticket came in")
    ex.add_argument("--queue", default=None, help="phone queue or line the call came in")
    ex.add_argument("--callback", action="store_true", help="a phone ticket that asks for a call back")
    ex.add_argument("--repeat", type=int, default=0, metavar="N", help="the customer's other recent tickets")
    ex.add_argument("--complaints", type=int, default=0, metavar="N", help="of those, complaints")
    ex.add_argument("--json", action="store_true", help="machine-readable")
    rules.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = args.file or _default_file()
    try:
        rules = load_rules(path)
        policy = load_policy(path)  # the routing: section of the same file, as the dispatcher reads it
    except (RulesError, PolicyError) as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 2
    if args.action == "validate":
        print(f"{path}: {len(rules.rules)} rules, valid (routing policy {policy.name!r}, {policy.capacity_model} "
              f"capacity)")
        return 0
    text = sys.stdin.read() if args.text == "-" else args.text
    source: dict[str, str] = {}
    if args.mailbox:
        source["mailbox"] = args.mailbox
    if args.queue:
        source["queue"] = args.queue
    if args.channel == "phone":
        source["callback"] = "true" if args.callback else "false"
    if args.complaints > args.repeat:
        print("--complaints counts some of the --repeat tickets: it cannot be larger", file=sys.stderr)
        return 2
    explanation = explain(rules, channel=args.channel, subject=args.subject, text=text,
                          customer_language=args.language, source=source, customer_tier=args.tier,
                          sender=args.sender,
                          history=CustomerHistory(recent_tickets=args.repeat, recent_complaints=args.complaints))
    if args.json:
        print(json.dumps({"file": str(path), **explanation.as_dict()}, ensure_ascii=False, indent=2))
        return 0
    print(_report(str(path), explanation.as_dict()))
    return 0



def _report(path: str, data: dict[str, Any]) -> str:
    result = data["result"]
    lines = [f"rules file: {path}", ""]
    summary = [
        ("priority", result["priority"]),
        ("required skills", ", ".join(result["required_skills"])),
        ("preferred skills", ", ".join(result["preferred_skills"]) or "-"),
        ("category", result["category"] or "-"),
        ("group", result["group"] or "-"),
        ("tags", ", ".join(result["tags"]) or "-"),
        ("language", f"{data['language']['value']} ({data['language']['reason']})"),
        ("matched rules", ", ".join(result["matched_rules"]) or "none"),
    ]
    width = max(len(k) for k, _ in summary) + 1
    lines += [f"{(k + ':').ljust(width)} {cell(v, 1000)}" for k, v in summary]
    lines += ["", "signals:"]
    lines += [f"  {s['signal']}: {cell(s['reason'], VALUE_CHARS)}" for s in data["signals"]] or ["  none"]
    lines += ["", "rules, in order:"]
    rows = [("#", "RULE", "OUTCOME", "WHY")] + [
        (str(i), cell(r["rule"], VALUE_CHARS), r["outcome"], cell(r["reason"], VALUE_CHARS) + (f"  → {cell(r['actions'], VALUE_CHARS)}" if r["actions"] else ""))
        for i, r in enumerate(data["rules"], 1)]
    widths = [max(len(row[c]) for row in rows) for c in range(3)]
    for row in rows:
        lines.append("  " + "  ".join(row[c].ljust(widths[c]) for c in range(3)) + "  " + row[3])
    if not data["rules"]:
        lines.append("  (no rules)")
    return "\n".join(line.rstrip() for line in lines)
