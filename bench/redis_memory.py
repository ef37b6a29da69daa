"""``python -m bench.redis_memory``: Redis memory per open ticket, per key pattern, and which keys
have no TTL, measured on the real mesh.

The mesh (devenv.mesh: dispatcher, sla_watcher, notifier, agent_desk, intake_chat) runs on a
vhost and Redis database of the benchmark's own. N chat tickets are posted at intake_chat and
assigned; a supervisor replies once on each through the agent desk's API (as a console would),
so the reply path's keys exist too. Then every key of the database is counted (SCAN, MEMORY
USAGE, TTL), grouped by the key patterns of docs/architecture.md ("Redis keys, by owner"): the
open state. Every ticket is then resolved through the agent desk and the database counted again:
what a closed ticket leaves in the hot keys until its TTLs run out.

Memory per ticket is the growth of the sum of MEMORY USAGE over the database's keys; INFO's
used_memory growth is shown beside it (the run has a Redis server of its own unless --redis-db).
A key pattern is flagged when it has keys without TTL although the table documents a timed
lifetime, or when it is missing from the table: ``check_key_bounds`` is what
tests/e2e/test_redis_key_bounds.py asserts.

Offers are off (bench.mesh_throughput.write_rules) so the supervisor can resolve without an
agent's acceptance racing the offer timer; the notifier's SMTP port is closed, so its outbox
holds every mail undelivered (the documented "until delivered" state: the worst case).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import re
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import aiohttp
import redis

from bench.mesh_scale import ScratchRedis
from bench.mesh_throughput import (BENCH_RATE_LIMITS, MESH_SERVICES, AssignmentClock, inject, put_agents_online,
                                   write_roster, write_rules)
from devenv.mesh import Mesh, isolated_env
from devenv.servers import http_get
from shared.testing.plugin import AMQP_BASE, create_vhost, delete_vhost

ARCHITECTURE = Path(__file__).resolve().parent.parent / "docs" / "architecture.md"
SUPERVISOR, PASSWORD = "bench.sup", "bench-password"
# Lifetimes in the table that mean "no TTL, bounded another way" (by the roster, by a state
# change that deletes the key, by trimming, by one entry per policy or day).
UNTIMED = re.compile(r"forever|until|while|bounded|with the views|last \d+|rebuilt|no TTL|pruned|per generation|"
                     r"a few per|relaxed|replayed", re.IGNORECASE)


# --- the documented key table -----------------------------------------------------------------------

@dataclass(frozen=True)
class KeyPattern:
    pattern: str          # as documented, under tm:
    lifetime: str
    regex: re.Pattern

    @property
    def may_lack_ttl(self) -> bool:
        return bool(UNTIMED.search(self.lifetime))

    @property
    def specificity(self) -> int:
        return len(re.sub(r"<[^>]*>|…", "", self.pattern))


def _regex(token: str) -> re.Pattern:
    out = []
    for part in re.split(r"(<[^>]*>|…)", token):
        if part == "…":
            out.append(".*")
        elif part.startswith("<"):
            out.append(".+")
        else:
            out.append(re.escape(part))
    return re.compile("^tm:" + "".join(out) + "$")


def documented_patterns(text: str | None = None) -> list[KeyPattern]:
    """The key table of docs/architecture.md: one KeyPattern per backticked key in its rows.
    ``…:x`` continues the row's first key (``a:b:<k>``, ``…:x`` → ``a:b:<k>:x``, and ``a:x``
    since the table also uses it for the owner's prefix); where a row's
    lifetime has as many ``/``-separated parts as keys, each key gets its own part."""
    text = text if text is not None else ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("## Redis keys, by owner", 1)[1].split("\n## ", 1)[0]
    found: list[KeyPattern] = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not cells[1].startswith("`"):
            continue
        tokens = re.findall(r"`([^`]+)`", cells[1])
        lifetimes = [p.strip() for p in cells[3].split(" / ")]
        first = tokens[0]
        for i, token in enumerate(tokens):
            owner = first.split(":", 1)[0]
            if token.startswith("…:"):      # the first key continued, or its owner's prefix
                candidates = [first + token[1:], owner + token[1:]]
            elif token.startswith("…"):     # "…reply_published:…"
                candidates = [owner + ":" + token[1:]]
            else:
                candidates = [token]
            lifetime = lifetimes[i] if len(lifetimes) == len(tokens) else cells[3]
            found += [KeyPattern(c, lifetime, _regex(c)) for c in candidates]
    return found


def classify(key: str, patterns: list[KeyPattern]) -> KeyPattern | None:
    """The most specific documented pattern the key matches (None: undocumented)."""
    matches = [p for p in patterns if p.regex.match(key)]
    return max(matches, key=lambda p: p.specificity) if matches else None


def undocumented_shape(key: str) -> str:
    """A key's shape with its ids blanked, to group undocumented keys."""
    key = re.sub(r"TM-\d+", "<ticket>", key)
    key = re.sub(r"\b[0-9a-f]{16,}\b", "<hex>", key)
    return re.sub(r"\d+", "<n>", key)


# --- counting the database ------------------------------------------------------------------------

@dataclass
class PatternCount:
    keys: int = 0
    bytes: int = 0
    no_ttl: int = 0
    example_no_ttl: str = ""


@dataclass
class Census:
    patterns: dict[str, PatternCount] = field(default_factory=dict)
    lifetimes: dict[str, str] = field(default_factory=dict)
    used_memory: int = 0

    @property
    def keys(self) -> int:
        return sum(c.keys for c in self.patterns.values())

    @property
    def bytes(self) -> int:
        return sum(c.bytes for c in self.patterns.values())


def census(client: redis.Redis, patterns: list[KeyPattern] | None = None, batch: int = 500) -> Census:
    """Every key of the database: MEMORY USAGE and TTL, grouped by documented pattern (undocumented
    keys as ``UNDOCUMENTED <shape>``)."""
    patterns = patterns if patterns is not None else documented_patterns()
    result = Census(used_memory=int(client.info("memory")["used_memory"]))
    keys = list(client.scan_iter(count=1000))
    for start in range(0, len(keys), batch):
        chunk = keys[start:start + batch]
        pipe = client.pipeline(transaction=False)
        for key in chunk:
            pipe.memory_usage(key, samples=0)
            pipe.ttl(key)
        answers = pipe.execute()
        for i, key in enumerate(chunk):
            size, ttl = answers[2 * i], answers[2 * i + 1]
            if ttl == -2:       # expired between SCAN and now
                continue
            name = key.decode() if isinstance(key, bytes) else key
            found = classify(name, patterns)
            label = found.pattern if found else f"UNDOCUMENTED {undocumented_shape(name)}"
            result.lifetimes[label] = found.lifetime if found else "(not in docs/architecture.md)"
            count = result.patterns.setdefault(label, PatternCount())
            count.keys += 1
            count.bytes += size or 0
            if ttl == -1:
                count.no_ttl += 1
                count.example_no_ttl = count.example_no_ttl or name
    return result


def check_key_bounds(found: Census, patterns: list[KeyPattern] | None = None) -> list[str]:
    """What breaks the rule "every key has a TTL or is documented as bounded another way"."""
    patterns = patterns if patterns is not None else documented_patterns()
    untimed_ok = {p.pattern for p in patterns if p.may_lack_ttl}
    problems = []
    for label, count in sorted(found.patterns.items()):
        if not count.no_ttl:
            continue
        if label.startswith("UNDOCUMENTED"):
            problems.append(f"{count.no_ttl} keys without TTL of an undocumented pattern, e.g. {count.example_no_ttl}")
        elif label not in untimed_ok:
            problems.append(f"{count.no_ttl} keys of {label} have no TTL, documented lifetime "
                            f"{found.lifetimes[label]!r}, e.g. {count.example_no_ttl}")
    return problems


# --- the run ----------------------------------------------------------------------------------------

def add_supervisor(roster: Path) -> None:
    """A supervisor (never online, so never assigned) who may reply on and resolve any ticket."""
    from shared.roster import hash_password

    pw = hash_password(PASSWORD, salt=b"bench-salt-bytes")
    roster.write_text(roster.read_text() + "\n".join([
        f"  - agent_id: {SUPERVISOR}", "    name: Bench Supervisor", f"    password_hash: '{pw}'", "    role: supervisor",
        "    skills: {general: 1}", "    languages: [zh, en]", "    capacity: {chat: 1, email: 1, phone: 1}"]) + "\n")


def wait_quiet(vhost: str, mgmt: str = "http://guest:guest@127.0.0.1:15672", settle: float = 1.0,
               timeout: float = 300.0) -> None:
    """Until the vhost's queues hold nothing (ready or unacked) for ``settle`` seconds."""
    deadline, quiet_since = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        raw = http_get(f"{mgmt}/api/queues/{quote(vhost, safe='')}?columns=name,messages", timeout=2.0)
        busy = raw is None or any(q.get("messages", 0) for q in json.loads(raw)
                                  if not q["name"].startswith(("amq.", "ticketmesh.dead")))
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= settle:
            return
        time.sleep(0.2)
    raise TimeoutError(f"queues of {vhost} still busy after {timeout:.0f} s")


async def desk_session(desk_url: str) -> aiohttp.ClientSession:
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with http.post(f"{desk_url}/api/login", json={"agent_id": SUPERVISOR, "password": PASSWORD}) as response:
        if response.status != 200:
            await http.close()
            raise RuntimeError(f"supervisor sign-in answered {response.status}: {await response.text()}")
    return http


async def desk_call(http: aiohttp.ClientSession, url: str, body: dict, timeout: float = 60.0) -> dict:
    """POST, retrying while the agent desk has not stored the ticket's assignment yet (409/404)."""
    deadline = time.monotonic() + timeout
    while True:
        async with http.post(url, json=body) as response:
            payload = await response.json()
            if response.status in (200, 201):
                return payload
            if response.status not in (404, 409) or time.monotonic() > deadline:
                raise RuntimeError(f"{url} answered {response.status}: {payload}")
        await asyncio.sleep(0.2)


async def for_each(ticket_ids: list[str], concurrency: int, action) -> None:
    window = asyncio.Semaphore(concurrency)

    async def one(ticket_id: str) -> None:
        async with window:
            await action(ticket_id)
    await asyncio.gather(*(one(t) for t in ticket_ids))


async def run_tickets(mesh: Mesh, amqp_uri: str, vhost: str, count: int, concurrency: int,
                      on_open=None) -> list[str]:
    """``count`` chat tickets posted, assigned, replied to by the supervisor; then ``on_open()``;
    then all resolved. Returns the ticket ids."""
    desk = mesh.url("agent_desk")
    async with AssignmentClock(amqp_uri) as assigned:
        await inject(mesh.url("intake_chat"), count, concurrency, assigned)
        ticket_ids = sorted(assigned.seen_at)
    http = await desk_session(desk)
    try:
        await for_each(ticket_ids, concurrency, lambda t: desk_call(
            http, f"{desk}/api/tickets/{t}/reply", {"client_reply_id": uuid.uuid4().hex, "text": "我们正在处理，请稍候。"}))
        await asyncio.to_thread(wait_quiet, vhost)
        if on_open is not None:
            await on_open()
        await for_each(ticket_ids, concurrency, lambda t: desk_call(http, f"{desk}/api/tickets/{t}/resolve", {}))
        await asyncio.to_thread(wait_quiet, vhost)
    finally:
        await http.close()
    return ticket_ids


async def measure_memory(count: int = 1000, concurrency: int = 16, redis_db: int | None = None) -> dict:
    """``redis_db``: a database of the shared Redis (flushed); None: a Redis server of the run's own
    (INFO used_memory is then this run's alone)."""
    work = Path(tempfile.mkdtemp(prefix="tm-bench-memory-"))
    with contextlib.ExitStack() as stack:
        if redis_db is None:
            redis_url = stack.enter_context(ScratchRedis(work / "redis")).url()
        else:
            redis_url = f"redis://127.0.0.1:6379/{redis_db}"
        return await _measure_memory(count, concurrency, redis_url, work)


async def _measure_memory(count: int, concurrency: int, redis_url: str, work: Path) -> dict:
    vhost = await asyncio.to_thread(create_vhost, "tm-bench-memory")
    amqp_uri = f"{AMQP_BASE}/{quote(vhost, safe='')}"
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    roster, rules = work / "roster.yaml", work / "routing.yaml"
    write_roster(roster, count)
    add_supervisor(roster)
    write_rules(rules)
    env = isolated_env(amqp_uri=amqp_uri, redis_url=redis_url, work_dir=work, imap_port=1, smtp_port=1,
                       TM_ROSTER_FILE=str(roster), TM_ROUTING_RULES_FILE=str(rules), TM_LOG_LEVEL="WARNING",
                       TM_CHAT_RATE_LIMITS=BENCH_RATE_LIMITS)  # every benchmark visitor posts from 127.0.0.1
    mesh = Mesh(env, work / "log", quiet=True)
    patterns = documented_patterns()
    counted: dict[str, Census] = {}
    try:
        await asyncio.to_thread(mesh.start, MESH_SERVICES)
        await put_agents_online(amqp_uri)
        await asyncio.to_thread(wait_quiet, vhost)
        counted["empty"] = census(client, patterns)

        async def count_open() -> None:
            counted["open"] = await asyncio.to_thread(census, client, patterns)
        await run_tickets(mesh, amqp_uri, vhost, count, concurrency, on_open=count_open)
        counted["resolved"] = census(client, patterns)
        if mesh.exited():
            raise RuntimeError(f"a service died during the benchmark: {mesh.exited()} (logs in {work / 'log'})")
    finally:
        await asyncio.to_thread(mesh.stop)
        await asyncio.to_thread(delete_vhost, vhost)
        client.flushdb()
        client.close()
    return summarize(counted, count, patterns)


def summarize(counted: dict[str, Census], tickets: int, patterns: list[KeyPattern]) -> dict:
    empty, open_, resolved = counted["empty"], counted["open"], counted["resolved"]
    labels = sorted(set(open_.patterns) | set(resolved.patterns) | set(empty.patterns))
    untimed_ok = {p.pattern for p in patterns if p.may_lack_ttl}
    table = []
    for label in labels:
        e, o, r = (c.patterns.get(label, PatternCount()) for c in (empty, open_, resolved))
        table.append({"pattern": label, "lifetime": open_.lifetimes.get(label) or resolved.lifetimes.get(label, ""),
                      "keys_open": o.keys, "bytes_per_open_ticket": round((o.bytes - e.bytes) / tickets, 1),
                      "keys_resolved": r.keys, "bytes_per_resolved_ticket": round((r.bytes - e.bytes) / tickets, 1),
                      "no_ttl_open": o.no_ttl, "no_ttl_resolved": r.no_ttl,
                      "grows_without_ttl": (max(o.no_ttl, r.no_ttl) - e.no_ttl) >= tickets // 2,
                      "documented_bound": label in untimed_ok})
    return {
        "tickets": tickets,
        "bytes_per_open_ticket": round((open_.bytes - empty.bytes) / tickets),
        "bytes_per_resolved_ticket": round((resolved.bytes - empty.bytes) / tickets),
        "keys_per_open_ticket": round((open_.keys - empty.keys) / tickets, 1),
        "keys_per_resolved_ticket": round((resolved.keys - empty.keys) / tickets, 1),
        "used_memory_per_open_ticket": round((open_.used_memory - empty.used_memory) / tickets),
        "used_memory_per_resolved_ticket": round((resolved.used_memory - empty.used_memory) / tickets),
        "patterns": table,
        "problems_open": check_key_bounds(open_, patterns),
        "problems_resolved": check_key_bounds(resolved, patterns),
    }


def render(result: dict) -> str:
    head = (f"{'key pattern (under tm:)':58} {'keys open':>9} {'B/ticket':>9} {'keys res.':>9} {'B/ticket':>9} "
            f"{'no TTL o/r':>11}  lifetime")
    lines = [head, "-" * len(head)]
    for row in sorted(result["patterns"], key=lambda r: -r["bytes_per_open_ticket"]):
        flag = ("  ← grows per ticket without TTL" + (" (documented bound)" if row["documented_bound"] else "")
                if row["grows_without_ttl"] else "")
        lines.append(f"{row['pattern'][:58]:58} {row['keys_open']:>9} {row['bytes_per_open_ticket']:>9} "
                     f"{row['keys_resolved']:>9} {row['bytes_per_resolved_ticket']:>9} "
                     f"{str(row['no_ttl_open']) + '/' + str(row['no_ttl_resolved']):>11}  {row['lifetime'][:60]}{flag}")
    lines += ["", f"per open ticket: {result['bytes_per_open_ticket']} B in {result['keys_per_open_ticket']} keys "
                  f"(INFO used_memory: {result['used_memory_per_open_ticket']} B, whole instance)",
              f"per resolved ticket: {result['bytes_per_resolved_ticket']} B in {result['keys_per_resolved_ticket']} keys "
              f"(INFO used_memory: {result['used_memory_per_resolved_ticket']} B)"]
    for when in ("open", "resolved"):
        for problem in result[f"problems_{when}"]:
            lines.append(f"UNBOUNDED ({when}): {problem}")
    return "\n".join(lines)


def main() -> None:
    from shared.logging import configure_logging

    parser = argparse.ArgumentParser(prog="python -m bench.redis_memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickets", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--redis-db", type=int, default=None,
                        help="use this database of the shared Redis (flushed) instead of a Redis server of the run's own")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    configure_logging("bench", level="WARNING", fmt="console")
    # SIGTERM (timeout, kill) unwinds like Ctrl-C, so the mesh and the scratch Redis are stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    result = asyncio.run(measure_memory(args.tickets, args.concurrency, args.redis_db))
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
