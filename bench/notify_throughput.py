"""``python -m bench.notify_throughput``: notifications delivered per second by one notifier.

Two rows, measured side by side against the same in-process SMTP server (aiosmtpd, a handler
that only counts: no disk), with the same number of SMTP connections:

- **SMTP ceiling**: aiosmtplib alone sends N ready-made mails the size of an acknowledgement
  over ``--senders`` reused connections: what the relay and the client library can do here;
- **notifier**: a real ``python -m services.notifier`` process (its own vhost and scratch Redis
  database) gets N ``ticket_received`` (email channel, one customer address each so no loop cap
  applies), published confirmed with a bounded window in flight, and delivers N
  acknowledgements through the outbox: render, queue in Redis, claim, ``sending``, SMTP,
  ``sent``, ``notification_sent`` confirmed. Throughput: N over first publish → last mail
  accepted; latency: an event's publish → its mail accepted (in a burst, mostly waiting).

Checks at the end (a failure raises): every notification arrived exactly once (by Message-ID),
and every outbox entry ended ``sent`` and announced. Prints the table, the ratio
notifier/ceiling and the notifier process's CPU time per mail (its start-up included; on a
machine shared with other work the CPU a process gets, not the code, often sets the pace), and
writes bench/results/notify_throughput.json. Compare ratios on one machine, not absolute figures.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import email
import email.policy
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiosmtplib
import redis
from aiosmtpd.controller import Controller

from bench.stats import Measurement, summarize
from devenv.process import spawn_logged, stop_processes
from services.notifier import messages
from services.notifier.outbox import Outbox
from shared import events as ev
from shared.amqp import EventPublisher, connect
from shared.testing.asyncio_helpers import free_port
from shared.testing.plugin import AMQP_BASE, create_vhost, delete_vhost

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "notify_throughput.json"
ROSTER = REPO / "deploy" / "demo" / "roster.yaml"
WARMUP = 20
START_TIMEOUT = 60.0
NOW = datetime(2026, 3, 2, 8, 30, tzinfo=timezone.utc)


class CountingRelay:
    """Accepts everything, remembers when each Message-ID arrived (perf_counter) and how often."""

    def __init__(self, port: int):
        self.port = port
        self.arrived: dict[str, float] = {}
        self.copies: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._wanted: set[str] = set()
        self._done = threading.Event()
        self._controller = Controller(self, hostname="127.0.0.1", port=port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        now = time.perf_counter()
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.compat32)
        message_id = str(parsed["Message-ID"])
        with self._lock:
            self.arrived.setdefault(message_id, now)
            self.copies[message_id] += 1
            if self._wanted and self._wanted <= self.arrived.keys():
                self._done.set()
        return "250 2.0.0 Accepted"

    def expect(self, message_ids: set[str]) -> None:
        with self._lock:
            self._wanted = set(message_ids)
            self._done.clear()
            if self._wanted <= self.arrived.keys():
                self._done.set()

    async def wait(self, timeout: float) -> None:
        if not await asyncio.to_thread(self._done.wait, timeout):
            missing = len(self._wanted - self.arrived.keys())
            raise TimeoutError(f"{missing} of {len(self._wanted)} mails did not arrive within {timeout}s")

    def __enter__(self) -> "CountingRelay":
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()


def ack_events(count: int, start: int) -> list[dict]:
    return [ev.make_event(
        ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, now=NOW, trace_id=f"bench-{n}", ticket_id=f"TM-{n}", channel="email",
        customer={"name": "张伟", "email": f"customer{n}@example.com", "language": "zh-CN"}, subject="发票抬头错误",
        text="你好，我上个月的发票抬头写错了，请帮忙重开。", received_at=NOW.isoformat(),
        source={"message_id": f"<q{n}@mail.example.com>"}) for n in range(start, start + count)]


def message_id_of(body: dict) -> str:
    """The Message-ID the notifier gives the acknowledgement of ``body`` (dev token secret)."""
    sender = messages.Sender("support@ticketmesh.test", "TicketMesh Support")
    nid = messages.notification_id(body["event_id"], messages.KIND_TICKET_ACK)
    return messages.make_message_id(sender, body["ticket_id"], nid)


def sample_mail(n: int) -> EmailMessage:
    body = ack_events(1, n)[0]
    event = ev.parse_event(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, body)
    sender = messages.Sender("support@ticketmesh.test", "TicketMesh Support")
    return messages.ticket_ack(event, sender=sender, notification=f"{n:032x}", now=NOW)  # type: ignore[arg-type]


async def measure_ceiling(relay: CountingRelay, count: int, senders: int) -> Measurement:
    mails = [sample_mail(1_000_000 + n) for n in range(count)]
    ids = [str(m["Message-ID"]) for m in mails]
    relay.expect(set(ids))
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    started: dict[str, float] = {}

    async def sender() -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, start_tls=False) as smtp:
            while not queue.empty():
                i = queue.get_nowait()
                started[ids[i]] = time.perf_counter()
                await smtp.send_message(mails[i])

    t0 = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(senders)))
    await relay.wait(60)
    seconds = time.perf_counter() - t0
    latencies = [relay.arrived[i] - started[i] for i in ids]
    return summarize(f"SMTP ceiling: aiosmtplib, {senders} connections", count, seconds, latencies, senders=senders)


class NotifierProcess:
    def __init__(self, env: dict[str, str], log: Path):
        self.env, self.log = env, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = spawn_logged([sys.executable, "-m", "services.notifier"], self.log, env=self.env, cwd=REPO)

    def stop(self) -> None:
        if self.proc is not None:
            stop_processes([self.proc], 30)


async def measure_notifier(relay: CountingRelay, count: int, senders: int, concurrency: int, redis_db: int,
                           work: Path) -> Measurement:
    vhost = await asyncio.to_thread(create_vhost, "tm-bench-notify")
    amqp_uri = f"{AMQP_BASE}/{quote(vhost, safe='')}"
    redis_url = f"redis://127.0.0.1:6379/{redis_db}"
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    env = {**os.environ, "TM_AMQP_URI": amqp_uri, "TM_REDIS_URL": redis_url, "TM_SMTP_PORT": str(relay.port),
           "TM_NOTIFIER_PORT": "0", "TM_NOTIFIER_SENDERS": str(senders), "TM_PREFETCH": "64",
           "TM_ROSTER_FILE": str(ROSTER), "TM_LOG_LEVEL": "WARNING", "PYTHONPATH": str(REPO),
           # Ack on ticket_received (no dispatcher here to classify): the send path is measured.
           "TM_NOTIFY_ACK_WAIT_SECONDS": "0"}
    env.pop("TM_MAIL_TOKEN_SECRET", None)  # the dev secret: message_id_of() computes the same ids
    process = NotifierProcess(env, work / "notifier.log")
    conn = None
    cpu_before = _children_cpu()
    try:
        await asyncio.to_thread(process.start)
        conn = await connect(amqp_uri, name="bench-notify")
        publisher = EventPublisher(conn, ev.INTAKE_EMAIL)
        await publisher.start()

        async def publish_all(bodies: list[dict]) -> dict[str, float]:
            started: dict[str, float] = {}
            window = asyncio.Semaphore(concurrency)

            async def one(body: dict) -> None:
                async with window:
                    started[message_id_of(body)] = time.perf_counter()
                    await publisher.publish(ev.TICKET_RECEIVED, body)

            await asyncio.gather(*(one(b) for b in bodies))
            return started

        # The notifier declares its queues when it starts: publish the warm-up until it is consumed.
        warm = ack_events(WARMUP, 1)
        relay.expect({message_id_of(b) for b in warm})
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            await publish_all(warm)
            try:
                await relay.wait(3)
                break
            except TimeoutError:
                if process.proc is not None and process.proc.poll() is not None:
                    raise RuntimeError(f"the notifier exited at start (log: {work / 'notifier.log'})") from None
                if time.monotonic() > deadline:
                    raise
        bodies = ack_events(count, 1000)
        ids = {message_id_of(b) for b in bodies}
        relay.expect(ids)
        started = await publish_all(bodies)
        await relay.wait(600)
        first, last = min(started.values()), max(relay.arrived[i] for i in ids)
        latencies = [relay.arrived[i] - started[i] for i in ids]
        checks = check(client, relay, bodies + warm)
        await conn.close()
        conn = None
        await asyncio.to_thread(process.stop)
        cpu_ms = (_children_cpu() - cpu_before) * 1000 / (count + WARMUP)
        return summarize(f"notifier: ticket_received → mail accepted, {senders} senders", count, last - first,
                         latencies, senders=senders, concurrency=concurrency, cpus=os.cpu_count(), checks=checks,
                         cpu_ms_per_mail=round(cpu_ms, 2))
    finally:
        if conn is not None:
            await conn.close()
        await asyncio.to_thread(process.stop)
        await asyncio.to_thread(delete_vhost, vhost)
        client.flushdb()
        client.close()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # child processes that have been waited for
    return usage.ru_utime + usage.ru_stime


def check(client: redis.Redis, relay: CountingRelay, bodies: list[dict]) -> dict:
    """Every mail once; every outbox entry sent and announced (waits a moment for the last ones)."""
    ids = {message_id_of(b) for b in bodies}
    twice = [m for m in ids if relay.copies[m] != 1]
    if twice:
        raise AssertionError(f"{len(twice)} mails arrived more than once, e.g. {twice[:3]}")
    keys = [Outbox.record_key(messages.notification_id(b["event_id"], messages.KIND_TICKET_ACK)) for b in bodies]
    deadline = time.monotonic() + 30
    while True:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, "state", "announced")
        unfinished = [k for k, (state, announced) in zip(keys, pipe.execute()) if (state, announced) != ("sent", "1")]
        if not unfinished:
            return {"delivered_once": len(ids), "sent_and_announced": len(keys)}
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(unfinished)} outbox entries not sent and announced, e.g. {unfinished[:3]}")
        time.sleep(0.1)


async def measure(count: int = 2000, senders: int = 4, concurrency: int = 32, redis_db: int = 9) -> dict:
    work = Path(tempfile.mkdtemp(prefix="tm-bench-notify-"))
    with CountingRelay(free_port()) as relay:
        ceiling = await measure_ceiling(relay, count, senders)
        notifier = await measure_notifier(relay, count, senders, concurrency, redis_db, work)
    return {"measured_at": datetime.now(timezone.utc).isoformat(), "cpus": os.cpu_count(), "notifications": count,
            "senders": senders, "ceiling": ceiling.as_dict(), "notifier": notifier.as_dict(),
            "ratio_notifier_to_ceiling_throughput": round(notifier.per_second / ceiling.per_second, 3),
            "work_dir": str(work)}


def rows(result: dict) -> list[dict]:
    return [result["ceiling"], result["notifier"]]


def ratio_line(result: dict) -> str:
    return (f"notifier/SMTP ceiling throughput: {result['ratio_notifier_to_ceiling_throughput']:.3f} "
            f"({result['notifier']['per_second']} vs {result['ceiling']['per_second']} mails/s, "
            f"{result['senders']} connections); "
            f"notifier CPU {result['notifier']['extra']['cpu_ms_per_mail']} ms per mail; "
            f"checks {result['notifier']['extra']['checks']}")


def main() -> None:
    from bench.__main__ import table
    from shared.logging import configure_logging

    parser = argparse.ArgumentParser(prog="python -m bench.notify_throughput", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notifications", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=4, help="SMTP connections (TM_NOTIFIER_SENDERS)")
    parser.add_argument("--concurrency", type=int, default=32, help="event publishes in flight")
    parser.add_argument("--redis-db", type=int, default=9, help="scratch Redis database (flushed)")
    args = parser.parse_args()
    configure_logging("bench", level="WARNING", fmt="console")
    result = asyncio.run(measure(args.notifications, args.senders, args.concurrency, args.redis_db))
    print(table(rows(result)))
    print()
    print(ratio_line(result))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
