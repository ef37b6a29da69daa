"""``python -m bench``: the raw ceiling and the mesh, measured side by side in one run.

Prints one table and writes bench/results/latest.json. Figures are for comparing within one
run on one machine (the ratio mesh/raw is the number to watch), not absolute speeds.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import platform
import os
from datetime import datetime, timezone
from pathlib import Path

from bench.mesh_throughput import measure_mesh
from bench.raw_ceiling import measure_raw
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


async def run(count: int, concurrency: int, redis_db: int, paced_rate: float) -> dict:
    vhost = await asyncio.to_thread(create_vhost, "tm-bench-raw")
    try:
        raw = await measure_raw(f"{AMQP_BASE}/{vhost}", count, concurrency)
    finally:
        await asyncio.to_thread(delete_vhost, vhost)
    mesh, paced = await measure_mesh(count, concurrency, redis_db, paced_rate)
    return {
        "measured_at": datetime.now(timezone.utc).isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "tickets": count, "concurrency": concurrency,
        "raw": raw.as_dict(), "mesh": mesh.as_dict(), "mesh_paced": paced.as_dict(),
        "ratio_mesh_to_raw_throughput": round(mesh.per_second / raw.per_second, 3),
        "ratio_mesh_to_raw_p50_latency": round(mesh.p50_ms / raw.p50_ms, 2),
        "ratio_paced_mesh_to_raw_p50_latency": round(paced.p50_ms / raw.p50_ms, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--tickets", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32, help="requests/publishes in flight")
    parser.add_argument("--redis-db", type=int, default=8, help="scratch Redis database (flushed)")
    parser.add_argument("--paced-rate", type=float, default=40.0,
                        help="tickets/s for the latency run (keep it below the burst's throughput)")
    args = parser.parse_args()
    result = asyncio.run(run(args.tickets, args.concurrency, args.redis_db, args.paced_rate))
    print(table([result["raw"], result["mesh"], result["mesh_paced"]]))
    print(f"\nmesh/raw throughput: {result['ratio_mesh_to_raw_throughput']:.3f}   "
          f"mesh/raw p50 latency: burst {result['ratio_mesh_to_raw_p50_latency']:.1f}x, "
          f"paced {result['ratio_paced_mesh_to_raw_p50_latency']:.1f}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
