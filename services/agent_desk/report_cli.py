"""``ticketmesh report`` and ``ticketmesh trace``: the supervisor's numbers and one ticket's path,
from the event history agent_desk records (``history_store``).

    ticketmesh report [--from D] [--to D] [--by agent|group|channel|day] [--tz TZ] [--json]
        tickets received in the period (dates inclusive, in TZ; default the last 7 days and
        TM_REPORT_TIMEZONE): first response and resolution p50/p90 (wall-clock), SLA attainment,
        breaches, escalations, CSAT per row; SLA per day, the response-time distribution and
        the backlog by skill now
    ticketmesh trace TICKET|TRACE_ID [--json]
        the ticket's events in order: time, gap since the previous one, source service, event,
        key fields; its trace id, the longest gap, and its facts

Reads Redis (``TM_REDIS_URL``); changes nothing but forgetting backlog entries whose facts expired. Exit 2: a bad period or an unknown ticket.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime, timezone
from typing import Any

from services.agent_desk import history, reports
from services.agent_desk.config import Settings
from services.agent_desk.history_store import HistoryStore
from shared.cli_format import cell, grid, print_json
from shared.redis_store import async_client

CELL_CHARS = 60
# Record keys shown as the event's own columns, not among its details.
_HEAD_KEYS = {"at", "type", "source", "event_id", "trace_id", "gap_seconds"}


def register(sub: Any) -> None:
    """Add ``report`` and ``trace`` to the ``ticketmesh`` sub-parsers."""
    report = sub.add_parser("report", help="first response, resolution, SLA, breaches, escalations, CSAT per "
                                           "agent/group/channel/day (tickets received in the period)")
    report.add_argument("--from", dest="start", default=None, help="first day (YYYY-MM-DD) or an ISO-8601 time")
    report.add_argument("--to", dest="end", default=None, help="last day, included (YYYY-MM-DD), or an ISO-8601 "
                        "time (excluded); default today")
    report.add_argument("--by", choices=reports.GROUPINGS, default="day", help="one row per ... (default day)")
    report.add_argument("--tz", default=None, help="time zone of the days (default TM_REPORT_TIMEZONE)")
    report.add_argument("--json", action="store_true", help="machine-readable, every figure")
    report.set_defaults(func=run_report)
    trace = sub.add_parser("trace", help="one ticket's path through the mesh, from its recorded events")
    trace.add_argument("ticket", help="ticket id (TM-10001) or trace id")
    trace.add_argument("--json", action="store_true", help="machine-readable")
    trace.set_defaults(func=run_trace)


def _store(settings: Settings, client: Any) -> HistoryStore:
    return HistoryStore(client, event_ttl=int(settings.history_event_days * 86400),
                        fact_ttl=int(settings.history_fact_days * 86400), max_events=settings.history_max_events)




def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"



# --- report ----------------------------------------------------------------------------------------

def run_report(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    now = datetime.now(timezone.utc)  # read here, at the edge; reports.build is pure
    try:
        tz = reports.zone(args.tz or settings.report_timezone)
        start, end = reports.period(args.start, args.end, tz, now)
    except reports.ReportError as exc:
        print(exc, file=sys.stderr)
        return 2

    async def read() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
        client = async_client(settings.common.redis_url)
        store = _store(settings, client)
        try:
            return await store.received_between(start, end), await store.open_tickets(now)
        finally:
            await client.aclose()

    received, open_now = asyncio.run(read())
    body = reports.report(received, open_now, start=start, end=end, by=args.by, tz=tz, now=now)
    if args.json:
        print_json(body)
    else:
        print("\n".join(report_lines(body)))
    return 0


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _bound(seconds: int) -> str:
    return f"{seconds // 3600}h" if seconds % 3600 == 0 else f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


def _row(key: str, f: dict[str, Any]) -> list[str]:
    csat = f["csat"]
    return [cell(key, CELL_CHARS), str(f["tickets"]), str(f["resolved"]),
            duration(f["first_response"]["p50_seconds"]), duration(f["first_response"]["p90_seconds"]),
            duration(f["resolution"]["p50_seconds"]), duration(f["resolution"]["p90_seconds"]),
            _pct(f["sla"]["attainment"]), str(f["breaches"]["total"]), str(f["escalations"]),
            "-" if csat["average"] is None else f"{csat['average']:.2f} ({csat['count']})"]


def report_lines(body: dict[str, Any]) -> list[str]:
    p = body["period"]
    start = p["from"][:10]
    end = datetime.fromisoformat(p["to"])
    last = (end.date().toordinal() - (1 if end.time() == datetime.min.time() else 0))
    last_day = datetime.fromordinal(last).date().isoformat()
    lines = [f"tickets received {start} to {last_day} ({p['timezone']}), by {p['by']}; "
             f"times are wall-clock from arrival (business hours not taken out)", ""]
    none_key = {"agent": "(unassigned)", "group": "(no group)", "channel": "(unknown)", "day": "-"}[p["by"]]
    rows = [_row(r["key"] if r["key"] is not None else none_key, r) for r in body["rows"]]
    rows.append(_row("all", body["totals"]))
    header = [p["by"].upper(), "TICKETS", "RESOLVED", "FIRST RESP P50", "P90", "RESOLUTION P50", "P90", "SLA MET",
              "BREACHES", "ESCALATIONS", "CSAT"]
    lines += grid(rows, header, right=set(range(1, 11)))
    t = body["totals"]
    clocks = t["sla"]["clocks"]
    if clocks:
        lines += ["", "SLA by clock: " + ", ".join(f"{c} {_pct(v['attainment'])} ({v['met']} met, {v['breached']} "
                                                  f"breached)" for c, v in clocks.items())]
    lines += ["", "SLA met per day: " + ", ".join(f"{d['day'][5:]} {_pct(d['attainment'])}" for d in body["sla_by_day"])]
    buckets = body["response_time_distribution"]
    lines += ["first responses: " + ", ".join(
        (f"<{_bound(b['to_seconds'])}" if b["from_seconds"] == 0 else
         f">={_bound(b['from_seconds'])}" if b["to_seconds"] is None else
         f"{_bound(b['from_seconds'])}-{_bound(b['to_seconds'])}") + f" {b['count']}" for b in buckets)]
    dist = t["csat"]["distribution"]
    lines += ["CSAT: " + (f"average {t['csat']['average']:.2f} of {t['csat']['count']}; " if t["csat"]["count"] else
                          "no answers; ") + ", ".join(f"{s}★ {n}" for s, n in dist.items())]
    backlog = body["backlog_by_skill"]
    lines += ["", "backlog now (open tickets by skill): " + (", ".join(
        f"{cell(b['skill'], CELL_CHARS)} {b['open']} (oldest {duration(b['oldest_seconds'])})" for b in backlog) or "none")]
    return lines


# --- trace -----------------------------------------------------------------------------------------

def run_trace(args: argparse.Namespace) -> int:
    settings = Settings.from_env()

    async def read() -> tuple[str, list[str], dict[str, str]]:
        client = async_client(settings.common.redis_url)
        store = _store(settings, client)
        try:
            ticket_id = args.ticket
            records, facts = await store.ticket(ticket_id)
            if not records and not facts:
                ticket_id = await store.ticket_of_trace(args.ticket) or args.ticket
                records, facts = await store.ticket(ticket_id)
            return ticket_id, records, facts
        finally:
            await client.aclose()

    ticket_id, records, facts = asyncio.run(read())
    if not records and not facts:
        print(f"nothing recorded for {args.ticket}: unknown ticket or trace id, or older than "
              f"TM_HISTORY_FACT_DAYS ({settings.history_fact_days:g} days)", file=sys.stderr)
        return 2
    found = history.path(ticket_id, records, trace_id=facts.get("trace_id"), trimmed=int(facts.get("trimmed", 0)))
    summary = reports.summary(reports.facts_from_hash(facts)) if facts else None
    if args.json:
        print_json({**found.as_dict(), "facts": summary})
    else:
        print("\n".join(trace_lines(found, summary)))
    return 0


def _detail(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def trace_lines(found: history.Path, facts: dict[str, Any] | None) -> list[str]:
    lines = [f"ticket {found.ticket_id}  trace {found.trace_id or '-'}"]
    if facts:
        parts = [facts["channel"] or "channel unknown"]
        if facts["received_at"]:
            parts.append(f"received {facts['received_at']}")
        parts.append(f"first response {duration(facts['first_response_seconds'])}"
                     + (f" by {facts['agent']}" if facts["first_response_seconds"] is not None and facts["agent"] else ""))
        parts.append(f"resolved after {duration(facts['resolution_seconds'])}" if facts["resolved"] else "open")
        if facts["breaches"]:
            parts.append("breaches " + ", ".join(f"{c} {n}" for c, n in facts["breaches"].items()))
        if facts["escalations"]:
            parts.append(f"escalations {facts['escalations']}")
        if facts["csat"]:
            parts.append(f"CSAT {facts['csat']}")
        lines.append("  " + "; ".join(parts))
    if not found.events:
        lines.append("  its event records have expired (TM_HISTORY_EVENT_DAYS); the facts above are kept longer")
        return lines
    if found.trimmed:
        lines.append(f"  {found.trimmed} earliest events were dropped (TM_HISTORY_MAX_EVENTS)")
    rows = []
    day = None
    for e in found.events:
        at = datetime.fromisoformat(e["at"]).astimezone(timezone.utc)
        stamp = at.strftime("%H:%M:%S") if at.date() == day else at.strftime("%Y-%m-%d %H:%M:%S")
        day = at.date()
        details = " ".join(f"{k}={_detail(v)}" for k, v in e.items() if k not in _HEAD_KEYS)
        if e["trace_id"] != found.trace_id:
            details += f" trace={e['trace_id']}"
        rows.append([stamp, "" if e["gap_seconds"] is None else "+" + duration(e["gap_seconds"]), e["source"],
                     e["type"], cell(details, 120)])
    lines += [""] + ["  " + line for line in grid(rows, ["TIME (UTC)", "GAP", "SOURCE", "EVENT", "DETAILS"], {1})]
    if found.longest_gap:
        g = found.longest_gap
        lines += ["", f"longest gap: {duration(g['seconds'])} between {g['after']} and {g['before']}"]
    if found.other_traces:
        lines.append(f"events with another trace id: {', '.join(found.other_traces)}")
    return lines
