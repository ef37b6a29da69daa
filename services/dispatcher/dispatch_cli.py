"""``ticketmesh dispatch``: what the running dispatcher decided and what it is waiting on.

    ticketmesh dispatch explain TICKET [--json]   the ticket's routing facts and its decisions, oldest
                                                  first: step, time, winner, scored candidates, rejections
    ticketmesh dispatch queues [--json]           waiting tickets by requirement, with the oldest wait
    ticketmesh dispatch agents [--json]           presence, load per channel, share used, offers pending

Reads the dispatcher's Redis (``TM_REDIS_URL``) through its store, and the routing policy from
``TM_ROUTING_RULES_FILE`` (the capacity model and fairness window the figures are judged by).
Changes nothing. Exit 2: an unknown ticket.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone
from typing import Any

from services.dispatcher.config import DEFAULT_ROUTING_RULES_FILE, ROUTING_RULES_FILE_KEY
from services.dispatcher.policy import DEFAULT_POLICY, RoutingPolicy, load_policy
from services.dispatcher.routing import PER_CHANNEL, Requirement
from services.dispatcher.store import ASSIGNED, CHANNELS, DECISIONS_KEPT, DispatchStore, TicketRecord
from shared.cli_format import cell, grid, print_json
from shared.config import CommonSettings
from shared.config_files import ConfigFileError

TEXT_CHARS = 160  # per reason line in the readable view; --json has everything


def register(sub: Any) -> None:
    """Add ``dispatch explain|queues|agents`` to the ``ticketmesh`` sub-parsers."""
    dispatch = sub.add_parser("dispatch", help="routing decisions, waiting queues and agents of the running dispatcher")
    dispatch_sub = dispatch.add_subparsers(dest="action", required=True)
    explain = dispatch_sub.add_parser("explain", help=f"a ticket's routing decisions (the last {DECISIONS_KEPT})")
    explain.add_argument("ticket", help="ticket id, e.g. TM-10001")
    explain.add_argument("--json", action="store_true", help="machine-readable")
    queues = dispatch_sub.add_parser("queues", help="waiting tickets by requirement: counts and oldest wait")
    queues.add_argument("--json", action="store_true", help="machine-readable")
    agents = dispatch_sub.add_parser("agents", help="agents: presence, load, share used, tier, group, offers pending")
    agents.add_argument("--json", action="store_true", help="machine-readable")
    dispatch.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from shared.redis_store import sync_client

    client = sync_client(CommonSettings.from_env().redis_url)
    try:
        store = DispatchStore(client, _policy())
        now = time.time()
        if args.action == "explain":
            return _explain(store, args.ticket, now, args.json)
        if args.action == "queues":
            return _queues(store, now, args.json)
        return _agents(store, now, args.json)
    finally:
        client.close()


def _policy() -> RoutingPolicy:
    path = os.environ.get(ROUTING_RULES_FILE_KEY) or DEFAULT_ROUTING_RULES_FILE
    try:
        return load_policy(path)
    except ConfigFileError as exc:
        print(f"note: {exc}; judging load by the default policy (shared capacity, no fairness cap)", file=sys.stderr)
        return DEFAULT_POLICY




def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds")



# --- explain -------------------------------------------------------------------------------------

def _ticket_dict(record: TicketRecord) -> dict[str, Any]:
    f = record.facts
    return {
        "ticket_id": f.ticket_id, "state": record.state, "agent_id": record.agent_id,
        "accepted_by": record.accepted_by, "attempt": record.attempt,
        "offer_expires_at": _iso(record.offer_expires_at), "queued_at": _iso(record.queued_at),
        "channel": f.channel, "priority": f.priority, "required_skills": list(f.required_skills),
        "preferred_skills": list(f.preferred_skills), "language": f.language, "group": f.group,
        "tiers": list(f.tiers), "customer_tier": f.customer_tier, "category": f.category,
        "signals": list(f.signals), "matched_rules": list(f.matched_rules), "sla_due_at": _iso(f.sla_due_at),
        "sticky_agent_id": f.sticky_agent_id, "relax_step": record.relax_step,
        "escalation_level": record.escalation_level,
        "declined_by": sorted(record.declined), "last_unassigned": record.unassigned,
    }


def _explain(store: DispatchStore, ticket_id: str, now: float, as_json: bool) -> int:
    record = store.ticket(ticket_id)
    decisions = store.decisions(ticket_id)
    if record is None and not decisions:
        print(f"no routing record for {ticket_id}: unknown here, or resolved more than 30 days ago", file=sys.stderr)
        return 2
    ticket = _ticket_dict(record) if record is not None else None
    if as_json:
        print_json({"ticket": ticket, "decisions": decisions})
        return 0
    lines = []
    if ticket is not None:
        lines += _ticket_lines(ticket)
    else:
        lines.append(f"ticket {ticket_id}: its record has expired; its decisions are kept")
    lines += ["", f"decisions, oldest first ({len(decisions)}):" if decisions else "decisions: none recorded yet"]
    for n, decision in enumerate(decisions, 1):
        lines += [""] + [f"  {line}" if i else line for i, line in enumerate(_decision_lines(n, decision))]
    print("\n".join(line.rstrip() for line in lines))
    return 0


def _ticket_lines(t: dict[str, Any]) -> list[str]:
    state = t["state"]
    if state == ASSIGNED:
        how = f"accepted by {t['accepted_by']}" if t["accepted_by"] else (
            f"offered, until {t['offer_expires_at']}" if t["offer_expires_at"] else "assigned")
        state = f"assigned to {t['agent_id']} ({how}, attempt {t['attempt']})"
    elif state == "queued":
        state = f"waiting since {t['queued_at']}"
    rows = [
        ("state", state),
        ("needs", f"{t['channel']}, skills {', '.join(t['required_skills']) or '-'}, language {t['language']}, "
                  f"group {t['group'] or '-'}, tiers {'/'.join(t['tiers'])}"),
        ("prefers", ", ".join(t["preferred_skills"]) or "-"),
        ("priority", f"{t['priority']}, first response due {t['sla_due_at'] or '-'}, customer {t['customer_tier']}"),
        ("classified", f"rules {', '.join(t['matched_rules']) or 'none'}; signals {', '.join(t['signals']) or 'none'}"
                       f"; category {t['category'] or '-'}"),
    ]
    if t["sticky_agent_id"]:
        rows.append(("sticky", t["sticky_agent_id"]))
    if t["declined_by"]:
        rows.append(("declined by", ", ".join(t["declined_by"])))
    if t["last_unassigned"]:
        u = t["last_unassigned"]
        rows.append(("last returned", f"from {u.get('agent_id')}: {u.get('reason')}" + (f" by {u['by']}" if u.get("by") else "")))
    width = max(len(k) for k, _ in rows) + 1
    return [f"ticket {t['ticket_id']}"] + [f"  {(k + ':').ljust(width)} {cell(v, TEXT_CHARS)}" for k, v in rows]


def _decision_lines(n: int, d: dict[str, Any]) -> list[str]:
    winner = d.get("winner")
    head = f"{n}. {d.get('decided_at', '?')}  step {d.get('step', '?')}  → {winner or 'queued (no agent)'}"
    lines = [head, f"reason: {cell(d.get('reason', ''), TEXT_CHARS)}",
             f"considered {d.get('considered', 0)}, eligible {d.get('eligible', 0)}, policy {d.get('policy', '-')}"]
    candidates = d.get("candidates") or []
    if candidates:
        rows = [[("* " if c.get("agent_id") == winner else "  ") + str(c.get("agent_id")), f"{c.get('score', 0):.3f}",
                 f"{c.get('spare_share', 0):.2f}", f"{c.get('proficiency', 0):.2f}", f"{c.get('preferred', 0):.2f}",
                 _ago(c.get("idle_seconds")) if c.get("idle_seconds") is not None else "never"]
                for c in candidates]
        lines += ["candidates (score = spare share + weighted proficiency + weighted preferred):"]
        lines += ["  " + row for row in grid(rows, ["  AGENT", "SCORE", "SPARE", "PROFICIENCY", "PREFERRED", "IDLE"])]
    by_kind: dict[str, list[str]] = {}
    for agent_id, why in sorted((d.get("rejected") or {}).items()):
        kind, _, detail = why.partition(":")
        by_kind.setdefault(kind, []).append(f"{agent_id} ({detail.strip()})" if detail else agent_id)
    # The counts cover every agent left out; the list names at most the first 50.
    counts = d.get("rejected_counts") or {kind: len(agents) for kind, agents in by_kind.items()}
    if counts:
        lines.append("rejected: " + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items(),
                                                                                  key=lambda kv: (-kv[1], kv[0]))))
        lines += [f"  {kind}: {cell('; '.join(agents), TEXT_CHARS)}" for kind, agents in sorted(by_kind.items())]
    return lines


# --- queues --------------------------------------------------------------------------------------

def _queues(store: DispatchStore, now: float, as_json: bool) -> int:
    rows = []
    for requirement, count, oldest in store.queue_stats():
        need = Requirement.parse(requirement)
        rows.append({"channel": need.channel, "skills": list(need.skills), "language": need.language,
                     "group": need.group, "tiers": list(need.tiers), "waiting": count,
                     "oldest_queued_at": _iso(oldest), "oldest_wait_seconds": None if oldest is None else round(now - oldest, 1),
                     "requirement": requirement})
    rows.sort(key=lambda r: (-(r["oldest_wait_seconds"] or 0), r["requirement"]))
    if as_json:
        print_json(rows)
        return 0
    if not rows:
        print("no tickets waiting")
        return 0
    table = [[r["channel"], ",".join(r["skills"]) or "-", r["language"], r["group"] or "-", "/".join(r["tiers"]),
              str(r["waiting"]), _ago(r["oldest_wait_seconds"])] for r in rows]
    print("\n".join(grid(table, ["CHANNEL", "SKILLS", "LANGUAGE", "GROUP", "TIERS", "WAITING", "OLDEST WAIT"])))
    print(f"\n{sum(r['waiting'] for r in rows)} waiting in {len(rows)} queue{'s' if len(rows) > 1 else ''} "
          f"(oldest wait: since the ticket last entered its queue)")
    return 0


# --- agents --------------------------------------------------------------------------------------

def _agents(store: DispatchStore, now: float, as_json: bool) -> int:
    policy = store.policy
    store.profile("")  # reads the roster into the store's cache: snapshots count fairness per cached agent
    snapshots = store.agent_snapshots(now)
    open_by_agent = store.open_tickets_of([a.agent_id for a in snapshots])
    ids = sorted({t for tickets in open_by_agent.values() for t in tickets})
    records = {r.facts.ticket_id: r for r in store.tickets(ids) if r is not None}
    rows = []
    for agent in snapshots:
        mine = [records[t] for t in sorted(open_by_agent[agent.agent_id]) if t in records]
        offers = [r.facts.ticket_id for r in mine if r.state == ASSIGNED and r.agent_id == agent.agent_id
                  and r.offer_expires_at is not None and not r.accepted_by]
        profile = store.profile(agent.agent_id) or {}
        rows.append({
            "agent_id": agent.agent_id, "name": profile.get("name"), "role": profile.get("role"),
            "presence": agent.presence, "tier": agent.tier, "group": agent.group,
            "load": {c: {"open": agent.load.get(c, 0), "capacity": agent.capacity.get(c, 0)} for c in CHANNELS
                     if agent.capacity.get(c, 0) or agent.load.get(c, 0)},
            "share_used": round(agent.used_share(), 4) if policy.capacity_model != PER_CHANNEL else None,
            "recent_assignments": agent.recent_assignments if policy.fairness_max else None,
            "open_tickets": len(mine), "offers_pending": offers,
        })
    if as_json:
        print_json({"capacity_model": policy.capacity_model, "fairness_max": policy.fairness_max, "agents": rows})
        return 0
    if not rows:
        print("no agents: the dispatcher has not loaded a roster into this Redis")
        return 0
    table = []
    for r in rows:
        load = " ".join(f"{c} {v['open']}/{v['capacity']}" for c, v in r["load"].items()) or "-"
        used = "-" if r["share_used"] is None else f"{100 * r['share_used']:.0f}%"
        fair = "" if r["recent_assignments"] is None else f"{r['recent_assignments']}/{policy.fairness_max}"
        table.append([r["agent_id"], r["presence"], r["tier"], r["group"] or "-", load, used, fair,
                      str(len(r["offers_pending"])) + (f" ({', '.join(r['offers_pending'])})" if r["offers_pending"] else "")])
    header = ["AGENT", "PRESENCE", "TIER", "GROUP", "LOAD", "USED", "RECENT", "OFFERS PENDING"]
    if policy.fairness_max is None:
        header, table = header[:6] + header[7:], [row[:6] + row[7:] for row in table]
    print("\n".join(grid(table, header)))
    model = ("shared: one budget across channels, USED is its share in use" if policy.capacity_model != PER_CHANNEL
             else "per_channel: each channel's capacity is its own cap")
    print(f"\ncapacity model {model}")
    return 0
