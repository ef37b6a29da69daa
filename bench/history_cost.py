"""``python -m bench.history_cost``: what recording the event history costs agent_desk.

agent_desk is a hot service (every console socket, every ticket event), so the recorder must
cost little. Measured two ways, on the same machine in one run:

1. **The desk process, recording on vs off.** ``python -m services.agent_desk`` (the real entry
   point) runs as a child process in a vhost and Redis database of its own; the same mix of
   events (a scripted support day, ~14 events per ticket across every exchange, the customer's
   text ~1 KB) is published to it; the child's CPU time (utime + stime from /proc) is read from
   just before the first publish until every one of its queues is drained and acked. Runs
   alternate off, on, off, on ... (a neighbour's load on a shared machine falls on both alike).
   The figure is the extra desk CPU per event recorded, and on/off as a ratio.
2. **The recorder's own steps, in this process:** parsing the event (what any consumer pays),
   ``history.entry_of`` (pure), and ``HistoryStore.record`` (one Lua script, one round trip),
   per event.

Prints a small table; ``--json`` prints the figures as JSON.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

from bench.dispatcher_profile import mgmt_get, publish, wait_until

REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CUSTOMER_TEXT = ("您好，我上个月的订单 20261122 发票抬头写错了，需要重新开具。公司名称是上海某某科技有限公司，税号 91310000XXXXXXXX。"
                 "Also the delivery address changed; please confirm by email. ") * 6


def event_mix(copies: int) -> list[tuple[str, str, dict]]:
    """The scripted day (services/agent_desk/tests/report_day.py) ``copies`` times, each copy with
    its own ticket ids, trace ids and event ids, and a customer text of ~1 KB."""
    from services.agent_desk.tests import report_day

    day = (datetime.now(timezone.utc) - timedelta(days=1)).date()
    template = report_day.scripted_day(day)
    out = []
    for n in range(copies):
        ids: dict[str, str] = {}
        for source, event_type, body in template:
            ticket = f"TM-{n}-{body['ticket_id']}"
            copy = {**body, "ticket_id": ticket, "trace_id": f"trace-{ticket}",
                    "event_id": ids.setdefault(body["event_id"], uuid.uuid4().hex)}
            if "text" in copy:
                copy["text"] = CUSTOMER_TEXT
            out.append((source, event_type, copy))
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def desk_queues(vhost: str) -> list[dict]:
    return [q for q in mgmt_get(f"/queues/{quote(vhost, safe='')}?columns=name,messages,message_stats,consumers")
            if "--agent_desk." in q["name"]]


def expected_deliveries(queues: list[dict], events: list[tuple[str, str, dict]]) -> dict[str, int]:
    """Per desk queue, how many of the published events it receives (its source and event type)."""
    per_type: dict[tuple[str, str], int] = {}
    for source, event_type, _ in events:
        per_type[(source, event_type)] = per_type.get((source, event_type), 0) + 1
    expected = {}
    for q in queues:
        source, event_type = q["name"].removeprefix("evt-").split("--")[0].split("-", 1)
        expected[q["name"]] = per_type.get((source, event_type), 0)
    return expected


def one_run(record: bool, events: list[tuple[str, str, dict]], redis_db: int, work: Path) -> dict:
    import kombu
    import redis

    from shared.testing.asyncio_helpers import free_port
    from shared.testing.plugin import AMQP_BASE, create_vhost, delete_vhost

    vhost = create_vhost("tm-bench-history")
    amqp_uri = f"{AMQP_BASE}/{quote(vhost, safe='')}"
    redis_url = f"redis://127.0.0.1:6379/{redis_db}"
    redis.Redis.from_url(redis_url).flushdb()
    env = {**os.environ, "TM_AMQP_URI": amqp_uri, "TM_REDIS_URL": redis_url, "TM_DESK_PORT": str(free_port()),
           "TM_ROSTER_FILE": str(REPO / "deploy/demo/roster.yaml"), "TM_HISTORY_RECORD": str(record).lower(),
           "TM_REPLICA_ID": "bench-desk", "PYTHONPATH": str(REPO)}
    log = open(work / f"desk-{'on' if record else 'off'}.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "services.agent_desk"], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        needed = "agent_desk.record_history" if record else "agent_desk.store_ticket_received_email"
        wait_until(lambda: any(needed in q["name"] and q.get("consumers") for q in desk_queues(vhost)), 60,
                   "desk consuming")
        expected = expected_deliveries(desk_queues(vhost), events)
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        with kombu.Connection(amqp_uri) as conn:
            by_key: dict[tuple[str, str], list[dict]] = {}
            for source, event_type, body in events:  # in order, grouped per exchange and type
                by_key.setdefault((source, event_type), []).append(body)
            for (source, event_type), bodies in by_key.items():
                publish(conn, source, event_type, bodies)

        def drained() -> bool:
            queues = {q["name"]: q for q in desk_queues(vhost)}
            return all(queues.get(name, {}).get("messages", 1) == 0
                       and queues[name].get("message_stats", {}).get("ack", 0) >= n for name, n in expected.items())

        wait_until(drained, 600, "desk queues drained")
        cpu = cpu_seconds(proc.pid) - cpu0
        recorded = 0
        if record:
            client = redis.Redis.from_url(redis_url)
            tickets = sorted({b["ticket_id"] for _, _, b in events})
            pipe = client.pipeline(transaction=False)
            for t in tickets:
                pipe.scard(f"tm:history:ids:{t}")
            recorded = sum(pipe.execute())
        return {"record": record, "cpu_s": round(cpu, 3), "deliveries": sum(expected.values()),
                "wall_s": round(time.monotonic() - t0, 1), "recorded": recorded}
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        delete_vhost(vhost)


async def steps(events: list[tuple[str, str, dict]], redis_db: int) -> dict:
    """Per event: parse (json + schema), entry_of, record (Lua, one round trip)."""
    from services.agent_desk import history
    from services.agent_desk.history_store import HistoryStore
    from shared import events as ev
    from shared.redis_store import async_client

    raw = [(s, t, json.dumps(b, ensure_ascii=False).encode()) for s, t, b in events]
    t0 = time.process_time()
    parsed = [(s, t, ev.parse_event(s, t, json.loads(b))) for s, t, b in raw]
    parse = time.process_time() - t0
    t0 = time.process_time()
    entries = [history.entry_of(s, t, e) for s, t, e in parsed]
    entry = time.process_time() - t0
    client = async_client(f"redis://127.0.0.1:6379/{redis_db}")
    await client.flushdb()
    store = HistoryStore(client, event_ttl=30 * 86400, fact_ttl=180 * 86400, max_events=500)
    await store.record(entries[0])  # loads the script
    await client.flushdb()
    cpu0, latencies = time.process_time(), []
    for e in entries:
        t = time.perf_counter()
        await store.record(e)
        latencies.append(time.perf_counter() - t)
    record_cpu = time.process_time() - cpu0
    await client.flushdb()
    await client.aclose()
    n = len(events)
    latencies.sort()
    return {"events": n, "parse_us": round(1e6 * parse / n, 1), "entry_of_us": round(1e6 * entry / n, 1),
            "record_client_cpu_us": round(1e6 * record_cpu / n, 1),
            "record_p50_us": round(1e6 * latencies[n // 2], 1), "record_p99_us": round(1e6 * latencies[int(n * 0.99)], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.history_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickets", type=int, default=500, help="tickets in the event mix (multiple of 5)")
    parser.add_argument("--rounds", type=int, default=2, help="off/on pairs")
    parser.add_argument("--redis-db", type=int, default=int(os.environ.get("TM_TEST_REDIS_DB", "7")),
                        help="scratch Redis database (flushed)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from shared.logging import configure_logging

    configure_logging("bench", level="WARNING", fmt="console")
    events = event_mix(max(1, args.tickets // 5))
    work = Path(tempfile.mkdtemp(prefix="tm-bench-history-"))
    runs = []
    for _ in range(args.rounds):
        for record in (False, True):
            runs.append(one_run(record, events, args.redis_db, work))
            print(f"  recording {'on ' if record else 'off'}: desk CPU {runs[-1]['cpu_s']:.2f}s for "
                  f"{runs[-1]['deliveries']} deliveries ({runs[-1]['wall_s']}s)", file=sys.stderr)
    off = statistics.median(r["cpu_s"] for r in runs if not r["record"])
    on = statistics.median(r["cpu_s"] for r in runs if r["record"])
    distinct = len({b["event_id"] for _, _, b in events})
    result = {
        "events_published": len(events), "events_distinct": distinct, "tickets": len({b["ticket_id"] for _, _, b in events}),
        "desk_cpu_off_s": off, "desk_cpu_on_s": on, "on_over_off": round(on / off, 3),
        "extra_desk_cpu_per_event_us": round(1e6 * (on - off) / len(events), 1),
        "desk_cpu_per_event_off_us": round(1e6 * off / len(events), 1),
        "recorded": [r["recorded"] for r in runs if r["record"]], "runs": runs,
        "steps": asyncio.run(steps(events, args.redis_db)),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    s = result["steps"]
    print(f"event mix: {result['tickets']} tickets, {len(events)} events published ({distinct} distinct)")
    print(f"agent_desk CPU (median of {args.rounds}): recording off {off:.2f}s, on {on:.2f}s "
          f"-> x{result['on_over_off']}; {result['desk_cpu_per_event_off_us']} us/event without, "
          f"+{result['extra_desk_cpu_per_event_us']} us/event recorded")
    print(f"recorder steps per event: parse {s['parse_us']} us, entry_of {s['entry_of_us']} us, "
          f"record (client CPU) {s['record_client_cpu_us']} us, record round trip p50 {s['record_p50_us']} us "
          f"p99 {s['record_p99_us']} us")
    assert all(r == distinct for r in result["recorded"]), f"recorded {result['recorded']}, expected {distinct}"


if __name__ == "__main__":
    main()
