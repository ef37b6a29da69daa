"""``python -m bench.mesh_cpu``: CPU milliseconds per ticket, per service, in the mesh burst.

On a small machine every service, RabbitMQ and Redis share the cores, so the mesh's throughput
is bounded by the total CPU one ticket costs across them. Wall-clock throughput moves with
whatever else loads the machine; CPU seconds per ticket barely do, so this is the figure to
compare when optimising. The mesh is the one bench.mesh_throughput runs (same services, roster
and chat POSTs, but offers off so that no offer expires and is made again); each process's utime+stime (``/proc/<pid>/stat``, all threads) is read
before and after the burst. RabbitMQ (beam.smp) and Redis are shared servers: their figures
include other users' load during the burst, so read them as an upper bound.

``--py-spy DIR`` also records py-spy's folded stacks of every service during the burst
(``DIR/<service>.folded``; ``--idle`` samples too, filter them out when reading CPU).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from bench.mesh_throughput import (BENCH_RATE_LIMITS, MESH_SERVICES, AssignmentClock, inject, put_agents_online,
                                   write_roster, write_rules)
from devenv.mesh import Mesh, isolated_env
from shared.testing.plugin import AMQP_BASE, create_vhost, delete_vhost

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SHARED_SERVERS = {"rabbitmq": "beam.smp", "redis": "redis-server"}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of stat(5)


def server_pids() -> dict[str, list[int]]:
    """The shared servers: the oldest process of each name (tests start short-lived ones too)."""
    pids: dict[str, list[int]] = {}
    for name, comm in SHARED_SERVERS.items():
        out = subprocess.run(["pgrep", "-o", "-x", comm], capture_output=True, text=True).stdout
        pids[name] = [int(p) for p in out.split()]
    return pids


def snapshot(pids: dict[str, list[int]]) -> dict[str, float]:
    return {name: sum(cpu_seconds(p) for p in ps) for name, ps in pids.items()}


async def measure_cpu(count: int, concurrency: int, redis_db: int, *, py_spy: Path | None = None, queues: bool = False,
                      work_dir: Path | None = None) -> dict:
    work_dir = work_dir or Path(tempfile.mkdtemp(prefix="tm-bench-cpu-"))
    vhost = await asyncio.to_thread(create_vhost, "tm-bench-cpu")
    amqp_uri = f"{AMQP_BASE}/{vhost}"
    redis_url = f"redis://127.0.0.1:6379/{redis_db}"
    redis.Redis.from_url(redis_url).flushdb()
    roster, rules = work_dir / "roster.yaml", work_dir / "routing.yaml"
    write_roster(roster, count + 50)
    # Offers off (as bench.dispatch_replicas): on a loaded machine unaccepted offers expire
    # mid-burst and are offered again, work that grows with the load and blurs the figure.
    write_rules(rules)
    env = isolated_env(amqp_uri=amqp_uri, redis_url=redis_url, work_dir=work_dir, imap_port=1, smtp_port=1,
                       TM_ROSTER_FILE=str(roster), TM_ROUTING_RULES_FILE=str(rules), TM_LOG_LEVEL="WARNING",
                       TM_CHAT_RATE_LIMITS=BENCH_RATE_LIMITS)  # every benchmark visitor posts from 127.0.0.1
    mesh = Mesh(env, work_dir / "log", quiet=True)
    spies: list[subprocess.Popen] = []
    try:
        await asyncio.to_thread(mesh.start, MESH_SERVICES)
        await put_agents_online(amqp_uri)
        pids = {name: [mesh.processes[name].pid] for name in MESH_SERVICES}
        pids.update(server_pids())
        async with AssignmentClock(amqp_uri) as assigned:
            # Warm-up: imports, connections and caches are paid before the measured burst.
            await inject(mesh.url("intake_chat"), 20, 4, assigned)
            assigned.reset()
            if py_spy:
                py_spy.mkdir(parents=True, exist_ok=True)
                spies = [subprocess.Popen(["py-spy", "record", "--nonblocking", "--idle", "-r", "200", "-f", "raw",
                                           "-o", str(py_spy / f"{name}.folded"), "--pid", str(pids[name][0])],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                         for name in MESH_SERVICES]
            before, t0 = snapshot(pids), time.perf_counter()
            burst = await inject(mesh.url("intake_chat"), count, concurrency, assigned)
            # The burst ends at the last assignment; consumers downstream of it (desk views,
            # history, SLA clocks, notifier) may still be working: wait until they are idle.
            await asyncio.to_thread(wait_idle, {s: pids[s] for s in MESH_SERVICES})
            after, seconds = snapshot(pids), time.perf_counter() - t0
        deliveries = await asyncio.to_thread(queue_deliveries, vhost) if queues else {}
        if mesh.exited():
            raise RuntimeError(f"a service died during the benchmark: {mesh.exited()}")
    finally:
        for spy in spies:
            spy.send_signal(2)
        for spy in spies:
            spy.wait(60)
        await asyncio.to_thread(mesh.stop)
        await asyncio.to_thread(delete_vhost, vhost)
        redis.Redis.from_url(redis_url).flushdb()
    per_ticket = {name: round((after[name] - before[name]) * 1000 / count, 3) for name in pids}
    services = sum(per_ticket[s] for s in MESH_SERVICES)
    return {"tickets": count, "seconds": round(seconds, 2), "per_second": burst.per_second,
            "cpu_ms_per_ticket": per_ticket, "services_ms": round(services, 3),
            "total_ms": round(sum(per_ticket.values()), 3), "deliveries": deliveries}


def queue_deliveries(vhost: str) -> dict[str, int]:
    """Messages delivered per queue of the vhost so far (the management API's counters lag by
    its stats interval: read them until they stop moving)."""
    from urllib.parse import quote

    from bench.dispatcher_profile import mgmt_get

    last: dict[str, int] = {}
    for _ in range(30):
        time.sleep(1.0)
        now = {q["name"]: q.get("message_stats", {}).get("deliver_get", 0)
               for q in mgmt_get(f"/queues/{quote(vhost, safe='')}")}
        if now == last:
            break
        last = now
    return last


def wait_idle(pids: dict[str, list[int]], timeout: float = 120.0) -> None:
    """Until the services stop using CPU (two quiet half-seconds in a row): the queues drained.

    (The management API's queue counts lag by its stats interval, so CPU is the quicker sign.)"""
    deadline, quiet = time.monotonic() + timeout, 0
    last = sum(snapshot(pids).values())
    while time.monotonic() < deadline and quiet < 2:
        time.sleep(0.5)
        now = sum(snapshot(pids).values())
        quiet = quiet + 1 if now - last < 0.02 else 0
        last = now


def render(result: dict) -> str:
    lines = [f"{'process':14} {'CPU ms/ticket':>14}", "-" * 29]
    for name, ms in result["cpu_ms_per_ticket"].items():
        lines.append(f"{name:14} {ms:>14.3f}")
    lines += ["-" * 29, f"{'services':14} {result['services_ms']:>14.3f}", f"{'all':14} {result['total_ms']:>14.3f}",
              f"({result['tickets']} tickets, burst {result['per_second']}/s)"]
    if result["deliveries"]:
        # includes the warm-up tickets and the presence events
        lines += ["", f"{'queue':70} {'delivered':>9}"]
        lines += [f"{name:70} {n:>9}" for name, n in sorted(result["deliveries"].items(), key=lambda kv: -kv[1]) if n]
        lines.append(f"{'all queues':70} {sum(result['deliveries'].values()):>9}")
    return "\n".join(lines)


def main() -> None:
    from shared.logging import configure_logging

    parser = argparse.ArgumentParser(prog="python -m bench.mesh_cpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickets", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--redis-db", type=int, default=13, help="scratch Redis database (flushed)")
    parser.add_argument("--queues", action="store_true", help="also list the messages each queue delivered")
    parser.add_argument("--py-spy", type=Path, help="write py-spy folded stacks per service to this folder")
    args = parser.parse_args()
    configure_logging("bench", level="WARNING", fmt="console")
    print(render(asyncio.run(measure_cpu(args.tickets, args.concurrency, args.redis_db, py_spy=args.py_spy, queues=args.queues))))


if __name__ == "__main__":
    main()
