"""``python -m bench.email_idle_latency``: how fast a new mail becomes a ``ticket_received``.

The issue asks for under 2 s at p99 from a message landing in the mailbox to its event. Set-up:
a private Dovecot in a temporary folder (devenv.dovecot), intake_email as its own process
(devenv.mesh, as ``./dev up`` runs it, watching INBOX with IMAP IDLE), a RabbitMQ vhost and a
scratch Redis database of the benchmark's own. The benchmark appends mail over one IMAP
connection of its own and a consumer bound to ``intake_email.events`` notes when each
``ticket_received`` arrives (matched by Message-ID). Latency per mail = start of its APPEND →
its event at the consumer, so it includes the APPEND itself, Dovecot's IDLE notice, the fetch,
normalization, the Redis ledger, the confirmed publish and the broker's delivery to us.

Two runs after one warm-up mail:

- paced: ``--messages`` mails, one every ``--interval-ms`` (default 200 ms): the IDLE path, the
  watcher idle between mails — the figure the 2 s requirement is about;
- burst: ``--burst`` mails appended back to back: the watcher's queueing behind a batch (mail
  handled one at a time per mailbox, so the last waits for all before it).

Prints p50/p99/max per run and writes bench/results/email_idle_latency.json (not committed).

Measured 2026-11-22 on 2 cores shared with other work, defaults (100 paced, 100 burst):

    paced, one every 200 ms    p50 325 ms   p90 517 ms   p99 525 ms   max 529 ms
    burst of 100 back to back  p50 698 ms   p90 767 ms   p99 785 ms   max 787 ms

So the paced p99 is about a quarter of the 2 s budget. Handling itself takes ~10 ms a mail (the
burst's 100 mails clear in under 0.8 s); most of the paced latency is the wait for Dovecot's
IDLE notice, which is why the figures cluster near 0.3 and 0.5 s.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import tempfile
import time
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path

import redis

from bench.stats import Measurement, percentile, summarize
from devenv.dovecot import DovecotServer
from devenv.mesh import Mesh, isolated_env
from shared import events as ev
from shared.testing.plugin import AMQP_BASE, create_vhost, delete_vhost

RESULTS = Path(__file__).resolve().parent / "results" / "email_idle_latency.json"
REQUIRED_P99_MS = 2000.0
USER, PASSWORD = "support", "support-demo"


def make_mail(run: str, i: int) -> tuple[str, bytes]:
    message_id = f"bench-{run}-{i}@bench.example.com"
    msg = EmailMessage()
    msg["From"] = f"Bench Customer {i} <bench{i}@example.com>"
    msg["To"] = "support@ticketmesh.test"
    msg["Subject"] = f"bench {run} {i}: 订单还没有到"
    msg["Message-ID"] = f"<{message_id}>"
    msg.set_content(f"你好，我的订单 {20261122 + i} 还没有到，请帮我查一下。\nThanks, customer {i}\n")
    return message_id, msg.as_bytes()


class EventClock:
    """When each ``ticket_received`` reached the benchmark, by Message-ID (one exclusive queue)."""

    def __init__(self, amqp_uri: str):
        self.amqp_uri = amqp_uri
        self.seen_at: dict[str, float] = {}
        self._changed = asyncio.Event()

    async def __aenter__(self) -> "EventClock":
        import aio_pika

        self._conn = await aio_pika.connect(self.amqp_uri)
        channel = await self._conn.channel()
        exchange = await channel.declare_exchange(ev.exchange_name(ev.INTAKE_EMAIL), aio_pika.ExchangeType.TOPIC,
                                                  durable=True)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key=ev.TICKET_RECEIVED)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            now = time.perf_counter()
            self.seen_at.setdefault(json.loads(message.body)["source"]["message_id"], now)
            await message.ack()
            self._changed.set()

        await queue.consume(on_message)
        return self

    async def wait_for(self, message_ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(m in self.seen_at for m in message_ids):
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = [m for m in message_ids if m not in self.seen_at]
                raise RuntimeError(f"{len(missing)} mails never became ticket_received, e.g. {missing[:3]}")
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def __aexit__(self, *exc: object) -> None:
        await self._conn.close()


def append_all(server: DovecotServer, mails: list[tuple[str, bytes]], interval: float) -> dict[str, float]:
    """APPEND each mail (paced at ``interval`` seconds, or back to back); start time per Message-ID."""
    started: dict[str, float] = {}
    with server.client(USER) as conn:
        first = time.perf_counter()
        for i, (message_id, raw) in enumerate(mails):
            if interval:
                time.sleep(max(0.0, first + i * interval - time.perf_counter()))  # the arrival schedule
            started[message_id] = time.perf_counter()
            conn.append("INBOX", raw)
    return started


async def measure(name: str, server: DovecotServer, clock: EventClock, mails: list[tuple[str, bytes]],
                  interval: float) -> Measurement:
    started = await asyncio.to_thread(append_all, server, mails, interval)
    await clock.wait_for(list(started), timeout=120 + len(mails) * interval)
    latencies = [clock.seen_at[m] - t0 for m, t0 in started.items()]
    seconds = max(clock.seen_at[m] for m in started) - min(started.values())
    ordered = sorted(latencies)
    return summarize(name, len(mails), seconds, latencies, interval_ms=round(interval * 1000),
                     max_ms=round(ordered[-1] * 1000, 2), p90_ms=round(percentile(ordered, 0.90) * 1000, 2))


async def run(messages: int, interval_ms: float, burst: int, redis_db: int) -> dict:
    work_dir = Path(tempfile.mkdtemp(prefix="tm-bench-email-"))  # under /tmp: Dovecot's mail user must reach it
    server = DovecotServer(work_dir, users={USER: PASSWORD})  # it opens its own folder to the mail user
    vhost = await asyncio.to_thread(create_vhost, "tm-bench-email")
    amqp_uri = f"{AMQP_BASE}/{vhost}"
    redis_url = f"redis://127.0.0.1:6379/{redis_db}"
    redis.Redis.from_url(redis_url).flushdb()
    mesh: Mesh | None = None
    try:
        await asyncio.to_thread(server.start)
        env = isolated_env(amqp_uri=amqp_uri, redis_url=redis_url, work_dir=work_dir / "mesh", imap_port=server.port,
                           smtp_port=1, TM_IMAP_USER=USER, TM_IMAP_PASSWORD=PASSWORD, TM_LOG_LEVEL="WARNING")
        mesh = Mesh(env, work_dir / "mesh" / "log")
        async with EventClock(amqp_uri) as clock:
            await asyncio.to_thread(mesh.start, ["intake_email"])
            await measure("warm-up", server, clock, [make_mail("warmup", 0)], 0)
            paced = await measure(f"paced, one every {interval_ms:g} ms: APPEND→ticket_received", server, clock,
                                  [make_mail("paced", i) for i in range(messages)], interval_ms / 1000)
            bursty = await measure(f"burst of {burst} back to back: APPEND→ticket_received", server, clock,
                                   [make_mail("burst", i) for i in range(burst)], 0)
        if mesh.exited():
            raise RuntimeError(f"intake_email died during the benchmark: {mesh.exited()}")
    finally:
        if mesh is not None:
            await asyncio.to_thread(mesh.stop)
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(delete_vhost, vhost)
        redis.Redis.from_url(redis_url).flushdb()
        shutil.rmtree(work_dir, ignore_errors=True)
    return {
        "measured_at": datetime.now(timezone.utc).isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "required_p99_ms": REQUIRED_P99_MS,
        "paced": paced.as_dict(),
        "burst": bursty.as_dict(),
        "paced_meets_requirement": paced.p99_ms < REQUIRED_P99_MS,
    }


def table(rows: list[dict]) -> str:
    head = f"{'measurement':58} {'n':>5} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'max ms':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['name']:58} {r['count']:>5} {r['p50_ms']:>9} {r['extra']['p90_ms']:>9} "
                     f"{r['p99_ms']:>9} {r['extra']['max_ms']:>9}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.email_idle_latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100, help="mails in the paced run")
    parser.add_argument("--interval-ms", type=float, default=200.0, help="spacing of the paced run")
    parser.add_argument("--burst", type=int, default=100, help="mails in the burst run")
    parser.add_argument("--redis-db", type=int, default=6, help="scratch Redis database (flushed)")
    args = parser.parse_args()
    result = asyncio.run(run(args.messages, args.interval_ms, args.burst, args.redis_db))
    print(table([result["paced"], result["burst"]]))
    verdict = "meets" if result["paced_meets_requirement"] else "MISSES"
    print(f"\npaced p99 {result['paced']['p99_ms']} ms {verdict} the requirement (< {REQUIRED_P99_MS:g} ms)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
