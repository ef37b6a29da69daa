"""``ticketmesh simulate``: read a trace, a staffing plan and SLA targets; print the policies side by side.

Formats (also in README, "Simulating routing policies"):

trace CSV, one contact per row: ``arrival`` (ISO-8601, UTC when no offset is given, or epoch
seconds), ``channel`` (email, chat, phone), ``skill`` (required skills, ``;``-separated, may be
empty), ``priority`` (integer, higher is more urgent), ``handle_seconds``, ``patience_seconds``
(empty: waits forever); optional ``customer_tier`` (default standard), ``language`` (empty: any
agent) and ``contact_id``.

staffing CSV, one shift per row: ``start``, ``end``, ``agent_id``, ``skills`` (``;``-separated,
``skill:proficiency`` with proficiency 1-5, default 3), ``capacity`` (a number for every channel,
or ``email=10;chat=3;phone=1``, unlisted channels 0); optional ``languages`` (``;``-separated,
empty: speaks every language). An agent may have several shifts that do not overlap.

The config file (``--config``) holds the SLA targets (``policies:``, as in deploy/config/sla.yaml)
and, optionally, the dispatcher's ``routing:`` section (as in deploy/config/routing.yaml): its
capacity model and score weights rank agents exactly as the live dispatcher does. Offers,
declines, fairness caps, sticky owners and relaxation are not simulated.

Every error names the file, the line and the column.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from services.dispatcher.policy import PolicyError as RoutingPolicyError
from services.dispatcher.policy import RoutingPolicy, parse_policy
from services.dispatcher.simulate import (
    ANY_LANGUAGE,
    CHANNELS,
    DEFAULT_TIER,
    LEVELS,
    POLICIES,
    Contact,
    Result,
    Shift,
    SimulationError,
    priority_level,
    simulate_all,
)
from shared.cli_format import grid
from shared.config_files import read_yaml
from shared.sla_policy import Policy, PolicyError, parse_policies

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO / "deploy" / "config" / "sla.yaml"
DEFAULT_PROFICIENCY = 3
TRACE_COLUMNS = ("arrival", "channel", "skill", "priority", "handle_seconds", "patience_seconds")
TRACE_OPTIONAL = ("customer_tier", "language", "contact_id")
STAFFING_COLUMNS = ("start", "end", "agent_id", "skills", "capacity")
STAFFING_OPTIONAL = ("languages",)
PROGRESS_MIN_CONTACTS = 5000
PROGRESS_INTERVAL_SECONDS = 0.5


class InputError(ValueError):
    """A trace, staffing or config file cannot be used; the message says where and why."""


@dataclass(frozen=True)
class _Cell:
    path: str
    line: int
    column: str
    value: str

    def fail(self, why: str) -> InputError:
        return InputError(f"{self.path}: line {self.line}, column {self.column!r}: {why}, got {self.value!r}")


# --- CSV -----------------------------------------------------------------------------------------

def _rows(path: str | Path, required: tuple[str, ...], optional: tuple[str, ...]
          ) -> Iterator[tuple[int, Callable[[str], _Cell]]]:
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    with f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise InputError(f"{path}: empty file, expected a header row: {','.join(required)}") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: line 1: not a readable CSV header: {exc}") from None
        missing = [c for c in required if c not in header]
        if missing:
            raise InputError(f"{path}: line 1: missing column(s) {', '.join(missing)} "
                             f"(header needs {', '.join(required)}; optional {', '.join(optional)})")
        unknown = [c for c in header if c not in required and c not in optional]
        if unknown:
            raise InputError(f"{path}: line 1: unknown column(s) {', '.join(repr(c) for c in unknown)} "
                             f"(known: {', '.join(required + optional)})")
        index = {name: i for i, name in enumerate(header)}
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as exc:
                raise InputError(f"{path}: line {reader.line_num}: not readable CSV: {exc}") from None
            if not any(cell.strip() for cell in row):
                continue
            line = reader.line_num
            if len(row) != len(header):
                raise InputError(f"{path}: line {line}: {len(row)} fields, the header has {len(header)}")

            def cell(name: str, row=row, line=line) -> _Cell:
                i = index.get(name)
                return _Cell(str(path), line, name, "" if i is None else row[i].strip())

            yield line, cell


def _time(cell: _Cell) -> float:
    if not cell.value:
        raise cell.fail("expected a time (ISO-8601 or epoch seconds)")
    try:
        return float(cell.value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(cell.value)
    except ValueError:
        raise cell.fail("expected a time (ISO-8601 or epoch seconds)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def _number(cell: _Cell, what: str = "a number of seconds", minimum: float = 0.0) -> float:
    try:
        value = float(cell.value)
    except ValueError:
        raise cell.fail(f"expected {what}") from None
    if not value >= minimum or value == float("inf"):  # also refuses nan
        raise cell.fail(f"expected {what} >= {minimum:g}")
    return value


def _integer(cell: _Cell) -> int:
    try:
        return int(cell.value)
    except ValueError:
        raise cell.fail("expected an integer") from None


def _channel(cell: _Cell) -> str:
    if cell.value not in CHANNELS:
        raise cell.fail(f"expected one of {', '.join(CHANNELS)}")
    return cell.value


def _names(value: str) -> list[str]:
    return [part.strip() for part in value.split(";") if part.strip()]


def load_trace(path: str | Path) -> list[Contact]:
    contacts: list[Contact] = []
    for line, cell in _rows(path, TRACE_COLUMNS, TRACE_OPTIONAL):
        patience = cell("patience_seconds")
        contacts.append(Contact(
            contact_id=cell("contact_id").value or f"line {line}",
            arrival=_time(cell("arrival")),
            channel=_channel(cell("channel")),
            skills=tuple(_names(cell("skill").value)),
            priority=_integer(cell("priority")),
            handle_seconds=_number(cell("handle_seconds")),
            patience_seconds=_number(patience) if patience.value else None,
            customer_tier=cell("customer_tier").value or DEFAULT_TIER,
            language=cell("language").value or ANY_LANGUAGE,
        ))
    if not contacts:
        raise InputError(f"{path}: no contacts after the header")
    return contacts


def _skills(cell: _Cell) -> dict[str, int]:
    skills: dict[str, int] = {}
    for part in _names(cell.value):
        name, sep, level = part.partition(":")
        name = name.strip()
        if not name:
            raise cell.fail("expected skill or skill:proficiency, separated by ';'")
        if not sep:
            skills[name] = DEFAULT_PROFICIENCY
            continue
        try:
            skills[name] = int(level)
        except ValueError:
            raise cell.fail(f"proficiency of {name!r} must be an integer 1-5") from None
        if not 1 <= skills[name] <= 5:
            raise cell.fail(f"proficiency of {name!r} must be 1-5")
    return skills


def _capacity(cell: _Cell) -> dict[str, int]:
    if not cell.value:
        raise cell.fail("expected a number or channel=n;… (email, chat, phone)")
    if "=" not in cell.value:
        try:
            n = int(cell.value)
        except ValueError:
            raise cell.fail("expected a whole number or channel=n;… (email, chat, phone)") from None
        if n < 0:
            raise cell.fail("capacity cannot be negative")
        return {ch: n for ch in CHANNELS}
    capacity: dict[str, int] = {}
    for part in _names(cell.value):
        channel, _, n = (p.strip() for p in part.partition("="))
        if channel not in CHANNELS:
            raise cell.fail(f"unknown channel {channel!r} (email, chat, phone)")
        try:
            capacity[channel] = int(n)
        except ValueError:
            raise cell.fail(f"capacity for {channel} must be a whole number") from None
        if capacity[channel] < 0:
            raise cell.fail("capacity cannot be negative")
    return capacity


def load_staffing(path: str | Path) -> list[Shift]:
    shifts: list[Shift] = []
    lines: dict[int, int] = {}  # index in shifts → line
    for line, cell in _rows(path, STAFFING_COLUMNS, STAFFING_OPTIONAL):
        agent_id = cell("agent_id")
        if not agent_id.value:
            raise agent_id.fail("expected an agent id")
        start, end = _time(cell("start")), _time(cell("end"))
        if end <= start:
            raise cell("end").fail("a shift must end after it starts")
        lines[len(shifts)] = line
        shifts.append(Shift(agent_id=agent_id.value, start=start, end=end, skills=_skills(cell("skills")),
                            capacity=_capacity(cell("capacity")),
                            languages=tuple(_names(cell("languages").value))))
    if not shifts:
        raise InputError(f"{path}: no shifts after the header")
    order = sorted(range(len(shifts)), key=lambda i: (shifts[i].agent_id, shifts[i].start))
    for a, b in zip(order, order[1:]):
        if shifts[a].agent_id == shifts[b].agent_id and shifts[b].start < shifts[a].end:
            first, second = sorted((lines[a], lines[b]))
            raise InputError(f"{path}: lines {first} and {second}: shifts of {shifts[a].agent_id} overlap")
    return shifts


def load_config(path: str | Path) -> tuple[tuple[Policy, ...], RoutingPolicy]:
    """SLA targets (``policies:`` as in deploy/config/sla.yaml) and the routing policy (the
    dispatcher's ``routing:`` section; absent = its defaults). Other keys (classification
    ``rules:``) are not used."""
    try:
        data = read_yaml(path, "simulation config", PolicyError)
    except PolicyError as exc:
        raise InputError(str(exc)) from None
    if not isinstance(data, dict) or "policies" not in data:
        raise InputError(f"simulation config {path}: expected a mapping with a 'policies' list "
                         f"(the SLA policy format of deploy/config/sla.yaml)")
    try:
        sla = parse_policies({"policies": data["policies"]}, origin=f"simulation config {path}")
        routing = parse_policy(data, origin=f"simulation config {path}")
    except (PolicyError, RoutingPolicyError) as exc:
        raise InputError(str(exc)) from None
    return sla, routing


# --- output --------------------------------------------------------------------------------------

def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.0f}s"
    if value < 7200:
        return f"{value / 60:.1f}m"
    return f"{value / 3600:.1f}h"



def render(results: list[Result], summary: dict) -> str:
    routing = summary["routing"]
    out = [f"{summary['contacts']} contacts, {summary['agents']} agents ({summary['shifts']} shifts), "
           f"{summary['from']} → {summary['to']}; SLA targets from {summary['config']}",
           f"routing: {routing['capacity_model']} capacity, weights proficiency {routing['proficiency_weight']:g} "
           f"preferred {routing['preferred_weight']:g}", ""]
    rows = []
    for r in results:
        for label, s in [("all", r.overall), *r.by_priority.items()]:
            rows.append([r.policy if label == "all" else "", label, str(s.contacts), _pct(s.sla_attainment),
                         _secs(s.mean_wait), _secs(s.p90_wait), _pct(s.abandonment_rate), str(s.unanswered)])
    out += grid(rows, ["POLICY", "PRIORITY", "CONTACTS", "SLA", "MEAN WAIT", "P90 WAIT", "ABANDONED",
                         "UNANSWERED"], right={2, 3, 4, 5, 6, 7})
    out += ["", "occupancy per agent (staffed time with work in hand), contacts handled:"]
    agent_rows = []
    for n, agent in enumerate(results[0].agents):
        agent_rows.append([agent.agent_id, _secs(agent.staffed_seconds),
                           *(f"{_pct(r.agents[n].occupancy)} {r.agents[n].handled:>5}" for r in results)])
    out += grid(agent_rows, ["AGENT", "STAFFED", *(r.policy.upper() for r in results)],
                  right=set(range(1, len(results) + 2)))
    return "\n".join(out)


def _summary(contacts: list[Contact], shifts: list[Shift], config: str, routing: RoutingPolicy) -> dict:
    def iso(t: float) -> str:
        return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")

    levels: dict[str, int] = {}
    for c in contacts:
        level = priority_level(c.priority)
        levels[level] = levels.get(level, 0) + 1
    return {"contacts": len(contacts), "agents": len({s.agent_id for s in shifts}), "shifts": len(shifts),
            "from": iso(min(c.arrival for c in contacts)), "to": iso(max(c.arrival for c in contacts)),
            "config": config, "by_priority": {lv: levels[lv] for lv in LEVELS if lv in levels},
            "routing": {"capacity_model": routing.capacity_model, "proficiency_weight": routing.proficiency_weight,
                        "preferred_weight": routing.preferred_weight}}


class _Progress:
    """One updating line on stderr for long runs (a terminal), else a line per finished policy."""

    def __init__(self, stream: Any, total_policies: int):
        self.stream = stream
        self.tty = stream.isatty()
        self.total_policies = total_policies
        self.done_policies = 0
        self.started = self.policy_started = time.monotonic()
        self.last = 0.0

    def __call__(self, policy: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total:
            self.done_policies += 1
            line = (f"simulate: {policy} done, {total} contacts in {now - self.policy_started:.1f}s "
                    f"({self.done_policies}/{self.total_policies} policies)")
            self.stream.write(("\r\x1b[K" if self.tty else "") + line + "\n")
            self.policy_started = now
        elif self.tty and now - self.last >= PROGRESS_INTERVAL_SECONDS:
            self.stream.write(f"\r\x1b[Ksimulate: {policy} {done}/{total} contacts")
            self.last = now
        self.stream.flush()


# --- command -------------------------------------------------------------------------------------

def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("simulate", help="replay a workload trace through the routing policies, offline",
                            description="Replay a trace through the dispatcher's routing on a simulated clock "
                                        "and compare policies: SLA attainment, waits, abandonment, occupancy.")
    parser.add_argument("--trace", required=True, help="contacts CSV: arrival,channel,skill,priority,"
                                                       "handle_seconds,patience_seconds[,customer_tier,language]")
    parser.add_argument("--staffing", required=True, help="shifts CSV: start,end,agent_id,skills,capacity[,languages]")
    parser.add_argument("--policies", default=",".join(POLICIES),
                        help=f"comma-separated, from {', '.join(POLICIES)} (default: all)")
    parser.add_argument("--config", default=None,
                        help="SLA targets ('policies:' like deploy/config/sla.yaml, the default) and optionally "
                             "the dispatcher's 'routing:' section (capacity model, weights)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = [p for p in policies if p not in POLICIES]
    if unknown or not policies:
        print(f"unknown policy {', '.join(unknown) or '(none given)'}; known: {', '.join(POLICIES)}", file=sys.stderr)
        return 2
    config = args.config or str(DEFAULT_CONFIG)
    try:
        sla, routing = load_config(config)
        contacts = load_trace(args.trace)
        shifts = load_staffing(args.staffing)
    except InputError as exc:
        print(exc, file=sys.stderr)
        return 2
    progress = _Progress(sys.stderr, len(policies)) if len(contacts) >= PROGRESS_MIN_CONTACTS else None
    try:
        results = simulate_all(contacts, shifts, sla, policies, progress, routing)
    except SimulationError as exc:
        print(exc, file=sys.stderr)
        return 2
    summary = _summary(contacts, shifts, config, routing)
    if args.json:
        print(json.dumps({"input": summary, "priority_levels": {str(p): priority_level(p) for p in (4, 3, 2, 1)},
                          "results": [r.to_dict() for r in results]}, ensure_ascii=False, indent=2))
    else:
        print(render(results, summary))
    return 0

