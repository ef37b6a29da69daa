"""``python -m bench``: the raw ceiling and the mesh, the dispatcher's routing cost at 10 and
10,000 agents (bench.routing_cost), its throughput with 1 and 3 replicas
(bench.dispatch_replicas), the SLA sweep's cost per tick at 1,000 and 1,000,000 open clocks
with its firing lateness (bench.sla_sweep), notifications delivered per second against the
SMTP ceiling (bench.notify_throughput), chat messages through 500 concurrent WebSockets to
the agent console (bench.chat_sockets), and the mesh with 1 and 2 replicas of intake_chat and
the dispatcher against its own raw ceiling, with CPU per ticket per process (bench.mesh_scale),
measured in one run.

Prints one table and writes bench/results/latest.json. Figures are for comparing within one
run on one machine (the ratios are the numbers to watch: mesh/raw, 10,000/10 agents per routing
decision, 3/1 replicas), not absolute speeds.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import platform
import os
from datetime import datetime, timezone
from pathlib import Path

from bench import chat_sockets, dispatch_replicas, mesh_scale, notify_throughput, routing_cost, sla_sweep
from bench.mesh_throughput import measure_mesh
from bench.raw_ceiling import measure_raw
from shared.logging import configure_logging
from shared.testing.plugin import AMQP_BASE, create_vhost, delete_vhost

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


def table(rows: list[dict], mean: bool = False) -> str:
    """One line per measurement; ``mean``: a mean-ms column (from ``extra``, blank where absent)."""
    head = f"{'measurement':58} {'n':>6} {'per s':>9} {'p50 ms':>9} {'p99 ms':>9}" + (f" {'mean ms':>9}" if mean else "")
    lines = [head, "-" * len(head)]
    for r in rows:
        line = f"{r['name']:58} {r['count']:>6} {r['per_second']:>9} {r['p50_ms']:>9} {r['p99_ms']:>9}"
        if mean:
            line += f" {r['extra'].get('mean_ms', ''):>9}"
        lines.append(line)
    return "\n".join(lines)


async def run(count: int, concurrency: int, redis_db: int, paced_rate: float, *, routing: bool = True,
              routing_decisions: int = 500, routing_queued: int = 100_000, routing_redis_db: int = 12,
              replicas: bool = True, replica_tickets: int = 1000, replicas_redis_db: int = 14,
              sla: bool = True, sla_large: int = 1_000_000, sla_redis_db: int = 10,
              notify: bool = True, notifications: int = 1000, notify_redis_db: int = 9,
              chat: bool = True, chat_sockets_count: int = 500, chat_messages: int = 4, chat_redis_db: int = 15,
              scale: bool = True, scale_tickets: int = 1000, scale_redis_db: int | None = None) -> dict:
    vhost = await asyncio.to_thread(create_vhost, "tm-bench-raw")
    try:
        raw = await measure_raw(f"{AMQP_BASE}/{vhost}", count, concurrency)
    finally:
        await asyncio.to_thread(delete_vhost, vhost)
    mesh, paced = await measure_mesh(count, concurrency, redis_db, paced_rate)
    extra: dict = {}
    if routing:  # the sizes; fewer decisions per kind than the module's own default
        extra["routing_cost"] = await asyncio.to_thread(
            routing_cost.measure_routing_cost, routing_cost.redis_urls(routing_redis_db),
            decisions=routing_decisions, drains=routing_decisions, queued=routing_queued)
    if replicas:
        extra["dispatch_replicas"] = await dispatch_replicas.measure_replicas(replica_tickets, concurrency,
                                                                              replicas_redis_db)
    if sla:
        extra["sla_sweep"] = await asyncio.to_thread(sla_sweep.measure_sla_sweep, sla_sweep.redis_urls(sla_redis_db),
                                                     large=sla_large)
    if notify:
        extra["notify_throughput"] = await notify_throughput.measure(notifications, concurrency=concurrency,
                                                                     redis_db=notify_redis_db)
    if chat:
        runs = await chat_sockets.measure_chat_sockets(chat_sockets_count, chat_messages, chat_redis_db)
        extra["chat_sockets"] = {kind: m.as_dict() for kind, m in runs.items()}
    if scale:
        extra["mesh_scale"] = await mesh_scale.measure_scale(scale_tickets, concurrency, scale_redis_db)
    return {
        "measured_at": datetime.now(timezone.utc).isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "tickets": count, "concurrency": concurrency,
        "raw": raw.as_dict(), "mesh": mesh.as_dict(), "mesh_paced": paced.as_dict(),
        "ratio_mesh_to_raw_throughput": round(mesh.per_second / raw.per_second, 3),
        "ratio_mesh_to_raw_p50_latency": round(mesh.p50_ms / raw.p50_ms, 2),
        "ratio_paced_mesh_to_raw_p50_latency": round(paced.p50_ms / raw.p50_ms, 2),
        **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--tickets", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32, help="requests/publishes in flight")
    parser.add_argument("--redis-db", type=int, default=8, help="scratch Redis database (flushed)")
    parser.add_argument("--paced-rate", type=float, default=40.0,
                        help="tickets/s for the latency run (keep it below the burst's throughput)")
    parser.add_argument("--skip-routing", action="store_true", help="leave out the routing-cost rows")
    parser.add_argument("--routing-decisions", type=int, default=500,
                        help="routing decisions (and drains) measured per kind and roster size "
                             "(python -m bench.routing_cost measures 2,000)")
    parser.add_argument("--routing-queued", type=int, default=100_000,
                        help="tickets waiting in the routing-cost setups (the issue's figure is at 100,000)")
    parser.add_argument("--routing-redis-db", type=int, default=12,
                        help="scratch Redis databases of the routing cost: this one and the next (flushed)")
    parser.add_argument("--skip-replicas", action="store_true", help="leave out the dispatcher 1 vs 3 replicas rows")
    parser.add_argument("--replica-tickets", type=int, default=1000,
                        help="tickets sent to 1 and to 3 dispatchers (python -m bench.dispatch_replicas sends 3,000)")
    parser.add_argument("--replicas-redis-db", type=int, default=14, help="scratch Redis database (flushed)")
    parser.add_argument("--skip-sla", action="store_true", help="leave out the SLA sweep rows")
    parser.add_argument("--sla-large", type=int, default=1_000_000,
                        help="open clocks in the large SLA setup (the small one has 1,000)")
    parser.add_argument("--sla-redis-db", type=int, default=10,
                        help="scratch Redis databases of the SLA sweep: this one and the next (flushed)")
    parser.add_argument("--skip-notify", action="store_true", help="leave out the notifier vs SMTP ceiling rows")
    parser.add_argument("--notifications", type=int, default=1000,
                        help="acknowledgements the notifier delivers (python -m bench.notify_throughput sends 2,000)")
    parser.add_argument("--notify-redis-db", type=int, default=9, help="scratch Redis database (flushed)")
    parser.add_argument("--skip-chat", action="store_true", help="leave out the chat WebSockets rows")
    parser.add_argument("--chat-sockets", type=int, default=500, help="customers on WebSockets at once")
    parser.add_argument("--chat-messages", type=int, default=4, help="messages per customer after the first")
    parser.add_argument("--chat-redis-db", type=int, default=15, help="scratch Redis database (flushed)")
    parser.add_argument("--skip-scale", action="store_true",
                        help="leave out the mesh ×1 vs ×2 replicas (intake_chat, dispatcher) rows")
    parser.add_argument("--scale-tickets", type=int, default=1000, help="tickets per burst of the scale rows")
    parser.add_argument("--scale-redis-db", type=int, default=None,
                        help="scale rows on this database of the shared Redis (flushed); default: a Redis of their own")
    args = parser.parse_args()
    configure_logging("bench", level="WARNING", fmt="console")
    result = asyncio.run(run(args.tickets, args.concurrency, args.redis_db, args.paced_rate,
                             routing=not args.skip_routing, routing_decisions=args.routing_decisions,
                             routing_queued=args.routing_queued,
                             routing_redis_db=args.routing_redis_db, replicas=not args.skip_replicas,
                             replica_tickets=args.replica_tickets,
                             replicas_redis_db=args.replicas_redis_db, sla=not args.skip_sla,
                             sla_large=args.sla_large, sla_redis_db=args.sla_redis_db,
                             notify=not args.skip_notify,
                             notifications=args.notifications, notify_redis_db=args.notify_redis_db,
                             chat=not args.skip_chat, chat_sockets_count=args.chat_sockets,
                             chat_messages=args.chat_messages, chat_redis_db=args.chat_redis_db,
                             scale=not args.skip_scale, scale_tickets=args.scale_tickets,
                             scale_redis_db=args.scale_redis_db))
    rows = [result["raw"], result["mesh"], result["mesh_paced"]]
    if "routing_cost" in result:
        rows += routing_cost.rows(result["routing_cost"])
    if "dispatch_replicas" in result:
        rows += list(result["dispatch_replicas"]["runs"].values())
    if "sla_sweep" in result:
        rows += sla_sweep.rows(result["sla_sweep"])
    if "notify_throughput" in result:
        rows += notify_throughput.rows(result["notify_throughput"])
    if "chat_sockets" in result:
        rows += list(result["chat_sockets"].values())
    if "mesh_scale" in result:
        rows += mesh_scale.rows(result["mesh_scale"])
    print(table(rows, mean="routing_cost" in result or "sla_sweep" in result))
    print(f"\nmesh/raw throughput: {result['ratio_mesh_to_raw_throughput']:.3f}   "
          f"mesh/raw p50 latency: burst {result['ratio_mesh_to_raw_p50_latency']:.1f}x, "
          f"paced {result['ratio_paced_mesh_to_raw_p50_latency']:.1f}x")
    if "routing_cost" in result:
        print(routing_cost.ratio_lines(result["routing_cost"]))
    if "dispatch_replicas" in result:
        print(dispatch_replicas.ratio_line(result["dispatch_replicas"]))
    if "sla_sweep" in result:
        print(sla_sweep.ratio_lines(result["sla_sweep"]))
    if "notify_throughput" in result:
        print(notify_throughput.ratio_line(result["notify_throughput"]))
    if "mesh_scale" in result:
        print(mesh_scale.ratio_lines(result["mesh_scale"]))
        print(mesh_scale.cpu_table(result["mesh_scale"]))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
