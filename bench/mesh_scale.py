"""``python -m bench.mesh_scale``: the mesh with 1 and with 2 replicas of intake_chat and the
dispatcher, against the raw RabbitMQ ceiling measured in the same run, and where the CPU goes.

Each configuration is a fresh mesh (devenv.mesh, the processes ``./dev up`` runs: dispatcher,
sla_watcher, notifier, agent_desk, intake_chat) on a vhost and Redis database of its own, with
``replicas`` processes of intake_chat and of the dispatcher. The chat POSTs go round robin to
the intake replicas (as a load balancer would); the dispatchers share their queues. Offers are
off (bench.mesh_throughput.write_rules): unaccepted offers would expire after 60 s and be
assigned again mid-run, counting twice. Per
configuration: a burst of N first messages (throughput: N over first POST → last
``ticket_assigned``; latency per ticket: its POST → its ``ticket_assigned``, mostly queueing in
a burst) and a paced run below saturation (latency when not queueing). The raw ceiling is
bench.raw_ceiling (persistent, confirmed publish → consume of a ticket-sized message).

Where the CPU goes: during each burst, CPU seconds (utime + stime from /proc/<pid>/stat) of
every service process, of the RabbitMQ (beam.smp) and Redis serving this run (found by their
listening ports), and of this benchmark, divided by the tickets: milliseconds of CPU per
ticket. The whole machine's busy time (/proc/stat) over the same window shows what the rest of
the machine (other users) took. With 2 cores, throughput is bounded by roughly
2 cores / (CPU seconds per ticket, all processes together), so that sum is what limits it.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import os
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import redis

from bench.mesh_throughput import (BENCH_RATE_LIMITS, MESH_SERVICES, AssignmentClock, inject, put_agents_online,
                                   write_roster, write_rules)
from bench.raw_ceiling import measure_raw
from bench.stats import Measurement
from devenv.mesh import Mesh, isolated_env, service_of
from shared.testing.plugin import AMQP_BASE, create_vhost, delete_vhost

SCALED = ("intake_chat", "dispatcher")
IDLE_SECONDS = 3.0       # the idle window measured before each burst
STATS_SECONDS = 6.0      # longer than the management API's statistics interval (5 s)
TICKS = os.sysconf("SC_CLK_TCK")
AMQP_PORT, REDIS_PORT = 5672, 6379


# --- a Redis of the run's own ------------------------------------------------------------------------

class ScratchRedis:
    """A redis-server on a free port, configured as the shared one (no AOF, no snapshots), so other
    users of the shared server (whose databases benches flush) neither disturb the run nor are
    disturbed, and its CPU and memory are this run's alone."""

    def __init__(self, workdir: Path):
        from shared.testing.asyncio_helpers import free_port

        self.workdir, self.port = workdir, free_port()
        self._proc = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def __enter__(self) -> "ScratchRedis":
        from devenv.process import spawn_logged
        from devenv.servers import probe_redis, wait_until

        self.workdir.mkdir(parents=True, exist_ok=True)
        self._proc = spawn_logged(["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir",
                                   str(self.workdir), "--appendonly", "no", "--save", ""], self.workdir / "redis.out")
        if not wait_until(lambda: probe_redis(self.url()), 20, abort=lambda: self._proc.poll() is not None):
            raise RuntimeError(f"scratch Redis did not start (see {self.workdir / 'redis.out'})")
        return self

    def __exit__(self, *exc: object) -> None:
        from devenv.process import stop_processes

        stop_processes([self._proc], timeout=10)


# --- CPU accounting ---------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its waited-for children), in seconds; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # after "pid (comm)": state is fields[0], utime/stime/cutime/cstime are stat fields 14-17
    return sum(int(f) for f in fields[11:15]) / TICKS


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot (all cores)."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return (total - idle) / TICKS, total / TICKS


def listening_pid(port: int) -> int | None:
    """The process with a listening TCP socket on ``port`` (127.0.0.1 or any address)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{parts[9]}]")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(entry.name)
        except OSError:
            continue
    return None


class CpuMeter:
    """CPU seconds per named process between ``start()`` and ``stop()``."""

    def __init__(self, pids: dict[str, list[int]]):
        self.pids = pids
        self.used: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        now = {name: sum(cpu_seconds(p) for p in pids) for name, pids in self.pids.items()}
        times = os.times()
        now["benchmark (load generator, observer)"] = times.user + times.system
        return now

    async def idle(self, seconds: float) -> None:
        """CPU per second of each process while no ticket flows (timers, heartbeats, and, on the
        shared broker, other users' traffic): subtracted from the busy window's figures."""
        self.start()
        await asyncio.sleep(seconds)
        self.stop()
        self.idle_rate = {name: used / self.wall for name, used in self.used.items()}

    def start(self) -> None:
        self._t0, self._before, self._machine0 = time.monotonic(), self._read(), machine_busy_seconds()

    def stop(self) -> None:
        after, machine = self._read(), machine_busy_seconds()
        self.wall = time.monotonic() - self._t0
        self.used = {name: after[name] - self._before.get(name, 0.0) for name in after}
        self.machine_busy = machine[0] - self._machine0[0]
        self.machine_capacity = machine[1] - self._machine0[1]

    def report(self, tickets: int) -> dict:
        ours = sum(self.used.values())
        per_ticket = {name: round(seconds * 1000 / tickets, 2) for name, seconds in self.used.items()}
        idle = getattr(self, "idle_rate", {})
        net = {name: round(max(0.0, seconds - idle.get(name, 0.0) * self.wall) * 1000 / tickets, 2)
               for name, seconds in self.used.items()}
        return {
            "wall_seconds": round(self.wall, 2),
            "cpu_ms_per_ticket": per_ticket,
            "cpu_ms_per_ticket_net_of_idle": net,
            "idle_cores": {name: round(rate, 3) for name, rate in idle.items()},
            "cpu_ms_per_ticket_total": round(ours * 1000 / tickets, 2),
            "cores_busy_ours": round(ours / self.wall, 2),
            "cores_busy_machine": round(self.machine_busy / self.wall, 2),
            "cores_busy_others": round(max(0.0, self.machine_busy - ours) / self.wall, 2),
            "cores": os.cpu_count(),
            # the throughput the measured CPU per ticket allows if the machine's cores were the mesh's alone
            "cpu_bound_per_second": round(os.cpu_count() * 1000 / sum(net.values()), 1) if sum(net.values()) else None,
        }


def vhost_message_stats(vhost: str, mgmt: str = "http://guest:guest@127.0.0.1:15672") -> dict[str, int]:
    """Messages published into and delivered out of the vhost so far (all its exchanges and queues)."""
    from devenv.servers import http_get

    raw = http_get(f"{mgmt}/api/vhosts/{quote(vhost, safe='')}", timeout=5.0)
    stats = json.loads(raw).get("message_stats", {}) if raw else {}
    return {k: int(stats.get(k, 0)) for k in ("publish", "deliver_get")}


def settled_message_stats(vhost: str, timeout: float = 60.0) -> dict[str, int]:
    """The vhost's counts once what the burst set off has finished (unchanged over one statistics
    interval of the management API, which refreshes them every 5 s)."""
    last, deadline = vhost_message_stats(vhost), time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(STATS_SECONDS)
        now = vhost_message_stats(vhost)
        if now == last:
            return now
        last = now
    return last


def server_pids(redis_port: int = REDIS_PORT) -> dict[str, list[int]]:
    found = {"rabbitmq (beam.smp)": listening_pid(AMQP_PORT), "redis": listening_pid(redis_port)}
    return {name: [pid] for name, pid in found.items() if pid}


def mesh_pids(mesh: Mesh) -> dict[str, list[int]]:
    pids: dict[str, list[int]] = {}
    for key, process in mesh.processes.items():
        pids.setdefault(service_of(key), []).append(process.pid)
    return pids


# --- runs -------------------------------------------------------------------------------------------

async def run_config(replicas: int, count: int, concurrency: int, redis_url: str, paced_rate: float,
                     paced_count: int, work: Path) -> dict:
    work = work / f"x{replicas}"
    work.mkdir(parents=True, exist_ok=True)
    vhost = await asyncio.to_thread(create_vhost, f"tm-bench-scale{replicas}")
    amqp_uri = f"{AMQP_BASE}/{quote(vhost, safe='')}"
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    roster, rules = work / "roster.yaml", work / "routing.yaml"
    write_roster(roster, count + paced_count + 10 * replicas)
    write_rules(rules)
    env = isolated_env(amqp_uri=amqp_uri, redis_url=redis_url, work_dir=work, imap_port=1, smtp_port=1,
                       TM_ROSTER_FILE=str(roster), TM_ROUTING_RULES_FILE=str(rules), TM_LOG_LEVEL="WARNING",
                       TM_CHAT_RATE_LIMITS=BENCH_RATE_LIMITS)  # every benchmark visitor posts from 127.0.0.1
    mesh = Mesh(env, work / "log", quiet=True)
    try:
        await asyncio.to_thread(mesh.start, MESH_SERVICES, {s: replicas for s in SCALED})
        await put_agents_online(amqp_uri)
        urls = mesh.urls("intake_chat")
        async with AssignmentClock(amqp_uri) as assigned:
            # Warm-up: every intake replica and dispatcher has served before the clock starts.
            await inject(urls, 4 * replicas, 2 * replicas, assigned)
            assigned.reset()
            meter = CpuMeter({**mesh_pids(mesh), **server_pids(client.connection_pool.connection_kwargs["port"])})
            await meter.idle(IDLE_SECONDS)
            stats0 = await asyncio.to_thread(vhost_message_stats, vhost)
            meter.start()
            burst = await inject(urls, count, concurrency, assigned)
            meter.stop()
            stats1 = await asyncio.to_thread(settled_message_stats, vhost)
            assigned.reset()
            paced = await inject(urls, paced_count, concurrency, assigned, rate=paced_rate)
        if mesh.exited():
            raise RuntimeError(f"a service died during the benchmark: {mesh.exited()} (logs in {work / 'log'})")
    finally:
        await asyncio.to_thread(mesh.stop)
        await asyncio.to_thread(delete_vhost, vhost)
        client.flushdb()
        client.close()
    label = f"×{replicas} intake_chat + dispatcher"
    return {"replicas": replicas,
            "burst": rename(burst, f"mesh {label}: burst POST→assigned"),
            "paced": rename(paced, f"mesh {label}: paced {paced_rate:g}/s"),
            "cpu": meter.report(count),
            "messages_per_ticket": {k: round((stats1.get(k, 0) - stats0.get(k, 0)) / count, 1)
                                    for k in ("publish", "deliver_get")}}


def rename(m: Measurement, name: str) -> dict:
    return {**m.as_dict(), "name": name}


async def measure_raw_with_cpu(count: int, concurrency: int) -> dict:
    vhost = await asyncio.to_thread(create_vhost, "tm-bench-scale-raw")
    meter = CpuMeter({k: v for k, v in server_pids().items() if k.startswith("rabbitmq")})
    try:
        await meter.idle(IDLE_SECONDS)
        meter.start()
        raw = await measure_raw(f"{AMQP_BASE}/{vhost}", count, concurrency)
        meter.stop()
    finally:
        await asyncio.to_thread(delete_vhost, vhost)
    return {"raw": raw.as_dict(), "cpu": meter.report(count)}


async def measure_scale(count: int = 1000, concurrency: int = 32, redis_db: int | None = None,
                        paced_rate: float = 8.0, paced_count: int = 120,
                        replica_counts: tuple[int, ...] = (1, 2)) -> dict:
    """``redis_db``: a database of the shared Redis (flushed); None: a Redis server of the run's own."""
    work = Path(tempfile.mkdtemp(prefix="tm-bench-scale-"))
    raw = await measure_raw_with_cpu(count, concurrency)
    with contextlib.ExitStack() as stack:
        if redis_db is None:
            redis_url = stack.enter_context(ScratchRedis(work / "redis")).url()
        else:
            redis_url = f"redis://127.0.0.1:{REDIS_PORT}/{redis_db}"
        runs = {str(n): await run_config(n, count, concurrency, redis_url, paced_rate, paced_count, work)
                for n in replica_counts}
    raw_rate = raw["raw"]["per_second"]
    low, high = str(min(replica_counts)), str(max(replica_counts))
    return {
        "cpus": os.cpu_count(), "tickets": count, "concurrency": concurrency, "work_dir": str(work),
        "raw": raw, "runs": runs,
        "ratio_mesh_to_raw_throughput": {n: round(r["burst"]["per_second"] / raw_rate, 3) for n, r in runs.items()},
        f"ratio_{high}_to_{low}_replicas_throughput": round(runs[high]["burst"]["per_second"]
                                                             / runs[low]["burst"]["per_second"], 2),
    }


# --- reporting --------------------------------------------------------------------------------------

def rows(result: dict) -> list[dict]:
    out = [result["raw"]["raw"]]
    for run in result["runs"].values():
        out += [run["burst"], run["paced"]]
    return out


def ratio_lines(result: dict) -> str:
    key = next(k for k in result if k.startswith("ratio_") and k.endswith("_replicas_throughput"))
    high, low = key.split("_")[1], key.split("_")[3]
    mesh_raw = ", ".join(f"×{n} {v:.3f}" for n, v in result["ratio_mesh_to_raw_throughput"].items())
    return (f"mesh/raw throughput: {mesh_raw} (goal ≥ 0.5)   "
            f"{high}/{low} replicas throughput: {result[key]:.2f}x on {result['cpus']} CPUs")


def cpu_table(result: dict) -> str:
    columns = {"raw": result["raw"]["cpu"], **{f"×{n}": r["cpu"] for n, r in result["runs"].items()}}
    names: list[str] = []
    for cpu in columns.values():
        names += [n for n in cpu["cpu_ms_per_ticket"] if n not in names]
    head = (f"{'CPU ms per ticket in the burst: net of idle/gross':48}" + "".join(f" {c:>11}" for c in columns)
            + "".join(f" {'idle ' + c:>9}" for c in columns if c != "raw"))
    lines = [head, "-" * len(head)]
    for name in names:
        cells = [f"{c['cpu_ms_per_ticket_net_of_idle'][name]}/{c['cpu_ms_per_ticket'][name]}"
                 if name in c["cpu_ms_per_ticket"] else "" for c in columns.values()]
        lines.append(f"{name:48}" + "".join(f" {cell:>11}" for cell in cells)
                     + "".join(f" {c['idle_cores'].get(name, ''):>9}" for k, c in columns.items() if k != "raw"))
    lines.append(f"{'total, net of idle':48}" + "".join(
        f" {round(sum(c['cpu_ms_per_ticket_net_of_idle'].values()), 1):>11}" for c in columns.values()))
    for label, field in (("total accounted (gross)", "cpu_ms_per_ticket_total"), ("cores busy: accounted", "cores_busy_ours"),
                         ("cores busy: rest of the machine", "cores_busy_others"),
                         ("tickets/s if the cores were ours alone", "cpu_bound_per_second")):
        lines.append(f"{label:48}" + "".join(f" {str(c[field]):>11}" for c in columns.values()))
    for n, run in result["runs"].items():
        lines.append(f"×{n}: messages per ticket: {run['messages_per_ticket']['publish']} published, "
                     f"{run['messages_per_ticket']['deliver_get']} delivered (raw: 1 and 1)")
    lines.append("(idle columns: cores each process uses with no tickets flowing; the broker's includes "
                 "other users of the shared RabbitMQ)")
    return "\n".join(lines)


def main() -> None:
    from bench.__main__ import table
    from shared.logging import configure_logging

    parser = argparse.ArgumentParser(prog="python -m bench.mesh_scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickets", type=int, default=1000, help="tickets per burst (and raw messages)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests/publishes in flight")
    parser.add_argument("--redis-db", type=int, default=None,
                        help="use this database of the shared Redis (flushed) instead of a Redis server of the run's own")
    parser.add_argument("--paced-rate", type=float, default=8.0,
                        help="tickets/s of the latency run (below the burst throughput of ×1)")
    parser.add_argument("--paced-tickets", type=int, default=120)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    configure_logging("bench", level="WARNING", fmt="console")
    # SIGTERM (timeout, kill) unwinds like Ctrl-C, so the mesh and the scratch Redis are stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    result = asyncio.run(measure_scale(args.tickets, args.concurrency, args.redis_db, args.paced_rate,
                                       args.paced_tickets))
    print(table(rows(result)))
    print()
    print(ratio_lines(result))
    print()
    print(cpu_table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
