"""``python -m bench.dispatch_replicas``: assignments per second with 1 and with 3 dispatcher replicas.

The dispatcher runs as real processes (``python -m services.dispatcher``, as ``./dev up`` and a
deployment run it), 1 and then 3 of them on the same queues, each run on a vhost and a Redis
database of the benchmark's own. 20 agents are put online (``agent_presence_changed``, the agent
desk's event) with room for every ticket, then N ``ticket_received`` (chat, zh/en) are
published, confirmed, with a bounded number in flight. Classification is included (it is the
service's path). Offers are off (a bench copy of deploy/config/routing.yaml with
``offer_timeout_seconds: 0``), so an assignment needs no acceptance and never expires back
into the queue mid-run.

Throughput: N over first → last ``ticket_assigned`` seen by an observer queue. Latency per
ticket: its publish started → its ``ticket_assigned`` seen; the publisher outruns the
dispatcher, so in this burst it is mostly time spent waiting in the queue. Checks at the end (a failure
raises): every ticket assigned exactly once (state assigned, attempt 1, one distinct
``ticket_assigned`` event id), no agent over capacity and every agent's load equal to its open
tickets, loads summing to the tickets sent.

The replicas share the machine's cores with RabbitMQ, Redis and this benchmark: on a 2-core
machine 3 replicas cannot run 3 times as fast, and the figure says so rather than hides it.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import redis

from bench.dispatcher_profile import queue_info, ticket_bodies
from bench.mesh_throughput import BENCH_AGENTS, write_roster, write_rules
from bench.stats import Measurement, summarize
from services.dispatcher.store import CHANNELS, DispatchStore
from shared import events as ev
from shared.amqp import EventPublisher, connect
from shared.testing.plugin import AMQP_BASE, create_vhost, delete_vhost

REPO = Path(__file__).resolve().parent.parent
WARMUP_TICKETS = 20
START_TIMEOUT = 60.0


class AssignedObserver:
    """Every ``ticket_assigned``: when each ticket's first one arrived, and its event ids."""

    def __init__(self, amqp_uri: str):
        self.amqp_uri = amqp_uri
        self.seen_at: dict[str, float] = {}
        self.event_ids: dict[str, set[str]] = collections.defaultdict(set)
        self._wanted: set[str] = set()
        self._enough = asyncio.Event()

    async def __aenter__(self) -> "AssignedObserver":
        import aio_pika

        self._conn = await aio_pika.connect(self.amqp_uri)
        channel = await self._conn.channel()
        await channel.set_qos(prefetch_count=500)
        exchange = await channel.declare_exchange(ev.exchange_name(ev.DISPATCHER), aio_pika.ExchangeType.TOPIC,
                                                  durable=True)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key=ev.TICKET_ASSIGNED)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            now = time.perf_counter()
            body = json.loads(message.body)
            self.seen_at.setdefault(body["ticket_id"], now)
            self.event_ids[body["ticket_id"]].add(body["event_id"])
            await message.ack()
            if self._wanted and self._wanted <= self.seen_at.keys():
                self._enough.set()

        await queue.consume(on_message)
        return self

    async def wait_for(self, ticket_ids: set[str], timeout: float) -> None:
        self._wanted = ticket_ids
        self._enough.clear()
        if not ticket_ids <= self.seen_at.keys():
            await asyncio.wait_for(self._enough.wait(), timeout)

    async def __aexit__(self, *exc: object) -> None:
        await self._conn.close()


class Replicas:
    """``count`` dispatcher processes on one vhost and Redis database."""

    def __init__(self, count: int, env: dict[str, str], log_dir: Path):
        self.count, self.env, self.log_dir = count, env, log_dir
        self.procs: list[subprocess.Popen] = []

    def start(self, vhost: str) -> None:
        for i in range(self.count):
            log = open(self.log_dir / f"dispatcher-{self.count}x-{i}.log", "ab")
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "services.dispatcher"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                env={**self.env, "TM_REPLICA_ID": f"bench-{i}"}))
        deadline = time.monotonic() + START_TIMEOUT
        while queue_info(vhost).get("consumers", 0) < self.count:
            if self.exited():
                raise RuntimeError(f"a dispatcher exited at start: {self.exited()} (logs in {self.log_dir})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.count} dispatchers not consuming after {START_TIMEOUT}s")
            time.sleep(0.1)

    def exited(self) -> list[int]:
        return [p.returncode for p in self.procs if p.poll() is not None]

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def check_store(client: redis.Redis, roster: Path, ticket_ids: list[str], observer: AssignedObserver) -> dict:
    """Every ticket assigned exactly once; no agent over capacity; loads add up."""
    from shared.roster import load_roster

    store = DispatchStore(client)
    wrong = [(r.facts.ticket_id if r else t, r and r.state, r and r.attempt)
             for t, r in zip(ticket_ids, store.tickets(ticket_ids)) if r is None or r.state != "assigned" or r.attempt != 1]
    if wrong:
        raise AssertionError(f"{len(wrong)} tickets not assigned exactly once, e.g. {wrong[:3]}")
    twice = [t for t in ticket_ids if len(observer.event_ids[t]) != 1]
    if twice:
        raise AssertionError(f"{len(twice)} tickets announced with more than one assignment, e.g. {twice[:3]}")
    load = client.hgetall(store.load_key)
    total = 0
    for agent in load_roster(roster).agents:
        loads = {c: int(load.get(f"{agent.agent_id}:{c}", 0)) for c in CHANNELS}
        used = sum(n / agent.capacity[c] for c, n in loads.items() if n)
        if used > 1 + 1e-9:
            raise AssertionError(f"{agent.agent_id} over capacity: {loads} of {agent.capacity}")
        held = client.scard(store.open_key(agent.agent_id))
        if held != sum(loads.values()):
            raise AssertionError(f"{agent.agent_id}: load {loads} but {held} open tickets")
        total += held
    if total != len(ticket_ids):
        raise AssertionError(f"agents hold {total} tickets, {len(ticket_ids)} were sent")
    return {"assigned_once": len(ticket_ids), "agents_within_capacity": len(load_roster(roster).agents),
            "tickets_held": total}


async def run_replicas(replicas: int, count: int, concurrency: int, redis_db: int, work: Path) -> Measurement:
    vhost = await asyncio.to_thread(create_vhost, f"tm-bench-replicas{replicas}")
    amqp_uri = f"{AMQP_BASE}/{quote(vhost, safe='')}"
    redis_url = f"redis://127.0.0.1:6379/{redis_db}"
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    roster, rules = work / "roster.yaml", work / "routing.yaml"
    write_roster(roster, count + WARMUP_TICKETS)
    write_rules(rules)
    env = {**os.environ, "TM_AMQP_URI": amqp_uri, "TM_REDIS_URL": redis_url, "TM_ROSTER_FILE": str(roster),
           "TM_ROUTING_RULES_FILE": str(rules), "TM_LOG_LEVEL": "WARNING", "TM_DATA_DIR": str(work)}
    procs = Replicas(replicas, env, work)
    conn = None
    try:
        await asyncio.to_thread(procs.start, vhost)
        conn = await connect(amqp_uri, name="bench-replicas")
        desk, chat = EventPublisher(conn, ev.AGENT_DESK), EventPublisher(conn, ev.INTAKE_CHAT)
        await desk.start()
        await chat.start()
        async with AssignedObserver(amqp_uri) as observer:
            for i in range(BENCH_AGENTS):
                await desk.emit(ev.AGENT_PRESENCE_CHANGED, now=datetime.now(timezone.utc),
                                trace_id=ev.new_id(), agent_id=f"bench.{i:02d}", presence="online")

            async def publish_all(bodies: list[dict]) -> dict[str, float]:
                started: dict[str, float] = {}
                window = asyncio.Semaphore(concurrency)

                async def one(body: dict) -> None:
                    async with window:
                        started[body["ticket_id"]] = time.perf_counter()
                        await chat.publish(ev.TICKET_RECEIVED, body)
                await asyncio.gather(*(one(b) for b in bodies))
                return started

            # Warm-up: proves presence was applied everywhere and the path is hot before timing.
            warm = ticket_bodies(WARMUP_TICKETS)
            await publish_all(warm)
            await observer.wait_for({b["ticket_id"] for b in warm}, timeout=120)
            bodies = ticket_bodies(count)
            ids = {b["ticket_id"] for b in bodies}
            started = await publish_all(bodies)
            await observer.wait_for(ids, timeout=600)
        if procs.exited():
            raise RuntimeError(f"a dispatcher died during the benchmark: {procs.exited()} (logs in {work})")
        seen = [observer.seen_at[t] for t in ids]
        latencies = [observer.seen_at[t] - started[t] for t in ids]
        checks = check_store(client, roster, [b["ticket_id"] for b in warm + bodies], observer)
        return summarize(f"dispatcher ×{replicas}: ticket_received→ticket_assigned", count, max(seen) - min(seen),
                         latencies, replicas=replicas, concurrency=concurrency, cpus=os.cpu_count(), checks=checks)
    finally:
        if conn is not None:
            await conn.close()
        await asyncio.to_thread(procs.stop)
        await asyncio.to_thread(delete_vhost, vhost)
        client.flushdb()
        client.close()


async def measure_replicas(count: int = 3000, concurrency: int = 32, redis_db: int = 14,
                           replica_counts: tuple[int, ...] = (1, 3)) -> dict:
    work = Path(tempfile.mkdtemp(prefix="tm-bench-replicas-"))
    runs = {n: await run_replicas(n, count, concurrency, redis_db, work) for n in replica_counts}
    low, high = min(replica_counts), max(replica_counts)
    return {"cpus": os.cpu_count(), "tickets": count, "concurrency": concurrency,
            "runs": {str(n): m.as_dict() for n, m in runs.items()},
            f"ratio_{high}_to_{low}_replicas_throughput": round(runs[high].per_second / runs[low].per_second, 2),
            "work_dir": str(work)}


def ratio_line(result: dict) -> str:
    key = next(k for k in result if k.startswith("ratio_"))
    high, low = key.split("_")[1], key.split("_")[3]
    return (f"dispatcher replicas {high}/{low} throughput: {result[key]:.2f}x on {result['cpus']} CPUs "
            f"(replicas, RabbitMQ, Redis and the benchmark share them: not a linear-scaling machine)")


def main() -> None:
    from bench.__main__ import table

    parser = argparse.ArgumentParser(prog="python -m bench.dispatch_replicas", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickets", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32, help="publishes in flight")
    parser.add_argument("--redis-db", type=int, default=14, help="scratch Redis database (flushed)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    result = asyncio.run(measure_replicas(args.tickets, args.concurrency, args.redis_db))
    print(table(list(result["runs"].values())))
    print()
    print(ratio_line(result))
    for n, run in result["runs"].items():
        print(f"×{n}: checks {run['extra']['checks']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
