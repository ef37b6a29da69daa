"""``python -m bench.dispatcher_profile``: how fast ONE dispatcher drains a full queue, and where its time goes.

The mesh benchmark shows the dispatcher's queue growing while the process sits mostly idle.
This isolates it: in a vhost and Redis database of its own, the dispatcher starts once (so its
queues and bindings exist), 20 agents are put online, the dispatcher stops, N ``ticket_received``
events are published into its queue, and the dispatcher starts again. The drain rate is N over
first → last ``ticket_assigned`` seen by an observer queue.

The dispatcher runs as ``python -m bench.dispatcher_profile serve <timings.json>``: the real
``services.dispatcher`` entry point with timers around every store call, every confirmed publish
and every worker, and a gauge of workers in flight. Wall time per call (under eventlet, that
includes waiting for the hub) against its count shows where a worker's time goes; workers in
flight show whether they overlap at all. ``--py-spy`` also records a flame graph of the drain.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote, urlsplit

REPO = Path(__file__).resolve().parent.parent
QUEUE = "evt-intake_chat-ticket_received--dispatcher.handle_chat_ticket_received"
TEXTS = ["我的订单还没有收到，能帮我查一下吗？", "Hi, I was charged twice for order 20261122, please refund.",
         "APP 登录不了，一直报错", "How do I change my delivery address?"]


# --- inside the dispatcher process -------------------------------------------------------------

def serve(timings_path: str) -> None:
    import eventlet

    eventlet.monkey_patch()
    import nameko.amqp.publish
    from services.dispatcher import __main__ as dispatcher_main
    from services.dispatcher import service as dispatcher_service
    from services.dispatcher.store import DispatchStore
    from shared import nameko_ext

    stats: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0])  # count, total, max
    in_flight = {"now": 0, "max": 0, "sum": 0, "samples": 0}
    first_last = {"first": None, "last": None}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                entry = stats[name]
                entry[0] += 1
                entry[1] += dt
                entry[2] = max(entry[2], dt)
        return wrapper

    for name in ("register_ticket", "agent_snapshots", "claim", "enqueue", "mark_announced", "route_ticket",
                 "set_presence", "is_known_agent", "record_decision", "record_customer_agent", "record_customer_ticket",
                 "customer_history", "resolve_customer", "decisions", "tickets", "ticket", "index_page", "agent_snapshot",
                 "queue_heads", "requirements_waiting"):
        if hasattr(DispatchStore, name):
            setattr(DispatchStore, name, timed(f"store.{name}", getattr(DispatchStore, name)))
    for name in ("routing_lease", "routing"):  # context managers: time entering and leaving apart
        if hasattr(DispatchStore, name):
            DispatchStore_cm = getattr(DispatchStore, name)

            class TimedContext:
                def __init__(self, cm, name):
                    self.cm, self.name = cm, name

                def __enter__(self):
                    return timed(f"store.{self.name}(enter)", self.cm.__enter__)()

                def __exit__(self, *exc):
                    return timed(f"store.{self.name}(exit)", self.cm.__exit__)(*exc)

            setattr(DispatchStore, name, lambda store, *a, _cm=DispatchStore_cm, _n=name, **kw:
                    TimedContext(_cm(store, *a, **kw), _n))

    nameko.amqp.publish.Publisher.publish = timed("amqp.publish(confirmed)", nameko.amqp.publish.Publisher.publish)
    route = dispatcher_service.DispatcherService._route

    def route_worker(self, event):
        now = time.perf_counter()
        first_last["first"] = first_last["first"] or now
        in_flight["now"] += 1
        in_flight["max"] = max(in_flight["max"], in_flight["now"])
        in_flight["sum"] += in_flight["now"]
        in_flight["samples"] += 1
        try:
            return timed("worker._route (total)", route)(self, event)
        finally:
            in_flight["now"] -= 1
            first_last["last"] = time.perf_counter()
    dispatcher_service.DispatcherService._route = route_worker
    handler = nameko_ext.ValidatedEventHandler
    handler.handle_message = timed("consumer.handle_message(validate+spawn)", handler.handle_message)
    handler.handle_message_processed = timed("consumer.ack", handler.handle_message_processed)

    cpu0 = time.process_time()
    try:
        dispatcher_main.main()
    finally:
        span = (first_last["last"] or 0) - (first_last["first"] or 0)
        Path(timings_path).write_text(json.dumps({
            "calls": {k: {"count": v[0], "total_s": round(v[1], 3), "mean_ms": round(1000 * v[1] / v[0], 2) if v[0] else 0,
                          "max_ms": round(1000 * v[2], 1)} for k, v in sorted(stats.items())},
            "workers_in_flight": {"max": in_flight["max"],
                                  "mean_at_start": round(in_flight["sum"] / max(1, in_flight["samples"]), 1)},
            "cpu_s": round(time.process_time() - cpu0, 2), "worker_span_s": round(span, 2),
        }, indent=2))


# --- the driver --------------------------------------------------------------------------------

def mgmt_get(path: str) -> dict:
    from shared.testing.plugin import MGMT_URL

    parts = urlsplit(MGMT_URL)
    req = urllib.request.Request(f"{parts.scheme}://{parts.hostname}:{parts.port}/api{path}")
    import base64

    req.add_header("Authorization", "Basic " + base64.b64encode(f"{parts.username}:{parts.password}".encode()).decode())
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def queue_info(vhost: str) -> dict:
    try:
        return mgmt_get(f"/queues/{quote(vhost, safe='')}/{quote(QUEUE, safe='')}")
    except Exception:  # noqa: BLE001 - not declared yet
        return {}


def publish(conn, source: str, event_type: str, bodies: list[dict]) -> None:
    import kombu

    from shared import events as ev

    exchange = kombu.Exchange(ev.exchange_name(source), type="topic", durable=True)
    producer = conn.Producer()
    for body in bodies:
        producer.publish(body, exchange=exchange, routing_key=event_type, serializer="json", delivery_mode=2,
                         declare=[exchange])


def ticket_bodies(count: int) -> list[dict]:
    from shared import events as ev

    now = datetime.now(timezone.utc)
    bodies = []
    for i in range(count):
        ticket_id = f"T-{uuid.uuid4().hex[:12]}"
        bodies.append(ev.make_event(
            ev.INTAKE_CHAT, ev.TICKET_RECEIVED, now=now, trace_id=ev.new_id(), ticket_id=ticket_id, channel="chat",
            customer={"name": f"访客 {i}", "chat_visitor_id": f"v-{i}", "language": "zh" if i % 2 == 0 else "en"},
            subject="", text=TEXTS[i % len(TEXTS)], received_at=now, source={"visitor_id": f"v-{i}"}))
    return bodies


def print_hot_frames(folded: Path, top: int = 25) -> None:
    """Inclusive share of on-CPU samples per frame (py-spy's folded stacks, idle samples left out)."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        for frame in set(stack.split(";")):
            inclusive[frame] += n
    print(f"on-CPU samples: {total}; frames by inclusive share:")
    for frame, n in inclusive.most_common(top):
        print(f"{100 * n / max(total, 1):5.1f}%  {frame[:140]}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dispatcher_profile", description=__doc__)
    parser.add_argument("--tickets", type=int, default=1000)
    parser.add_argument("--redis-db", type=int, default=7, help="scratch Redis database (flushed)")
    parser.add_argument("--py-spy", action="store_true", help="sample the drain with py-spy (on-CPU only) and list the hottest frames")
    args = parser.parse_args()

    import kombu
    import redis

    from bench.mesh_throughput import BENCH_AGENTS, write_roster
    from shared import events as ev
    from shared.testing.plugin import AMQP_BASE, create_vhost, delete_vhost

    work = Path(tempfile.mkdtemp(prefix="tm-dispatch-prof-"))
    vhost = create_vhost("tm-bench-dispatch")
    amqp_uri = f"{AMQP_BASE}/{quote(vhost, safe='')}"
    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    roster = work / "roster.yaml"
    write_roster(roster, args.tickets)
    env = {**os.environ, "TM_AMQP_URI": amqp_uri, "TM_REDIS_URL": redis_url, "TM_ROSTER_FILE": str(roster),
           "TM_LOG_LEVEL": "WARNING", "TM_DATA_DIR": str(work)}
    timings = work / "timings.json"

    def start() -> subprocess.Popen:
        log = open(work / "dispatcher.log", "ab")
        return subprocess.Popen([sys.executable, "-m", "bench.dispatcher_profile", "serve", str(timings)],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)

    def stop(proc: subprocess.Popen) -> None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)

    conn = kombu.Connection(amqp_uri, transport_options={"confirm_publish": True})
    try:
        proc = start()
        wait_until(lambda: queue_info(vhost).get("consumers", 0) > 0, 60, "dispatcher consuming")
        now = datetime.now(timezone.utc)
        publish(conn, ev.AGENT_DESK, ev.AGENT_PRESENCE_CHANGED, [
            ev.make_event(ev.AGENT_DESK, ev.AGENT_PRESENCE_CHANGED, now=now, trace_id=ev.new_id(),
                          agent_id=f"bench.{i:02d}", presence="online") for i in range(BENCH_AGENTS)])
        wait_until(lambda: r.hvals("tm:dispatcher:presence").count(b"online") == BENCH_AGENTS, 30, "agents online")
        stop(proc)

        observer = kombu.Queue(f"observer-{uuid.uuid4().hex[:6]}", exchange=kombu.Exchange(
            ev.exchange_name(ev.DISPATCHER), type="topic", durable=True), routing_key=ev.TICKET_ASSIGNED)
        obs_chan = conn.channel()
        observer = observer(obs_chan)
        observer.declare()
        t0 = time.perf_counter()
        publish(conn, ev.INTAKE_CHAT, ev.TICKET_RECEIVED, ticket_bodies(args.tickets))
        print(f"pre-filled {args.tickets} ticket_received in {time.perf_counter() - t0:.1f}s; "
              f"queue depth {queue_info(vhost).get('messages', '?')} (mgmt lags)")

        seen: list[float] = []
        consumer_conn = kombu.Connection(amqp_uri)
        consumer = kombu.Consumer(consumer_conn.channel(), queues=[observer], accept=["json"],
                                  callbacks=[lambda body, msg: (seen.append(time.perf_counter()), msg.ack())])
        consumer.qos(prefetch_count=500)
        consumer.consume()
        proc = start()
        spy = None
        if args.py_spy:
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-r", "200", "-f", "raw",
                                    "-o", str(work / "drain.folded"), "--pid", str(proc.pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 600
        while len(seen) < args.tickets and time.monotonic() < deadline:
            try:
                consumer_conn.drain_events(timeout=1)
            except TimeoutError:
                pass
        span = seen[-1] - seen[0] if len(seen) > 1 else float("nan")
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        stop(proc)
        consumer_conn.release()
        result = json.loads(timings.read_text())
        print(f"drained {len(seen)}/{args.tickets} tickets: {len(seen) / span:.1f} ticket_assigned/s "
              f"(first→last {span:.2f}s), dispatcher CPU {result['cpu_s']}s over a worker span of "
              f"{result['worker_span_s']}s ({100 * result['cpu_s'] / max(result['worker_span_s'], 1e-9):.0f}%)")
        print(f"workers in flight: max {result['workers_in_flight']['max']}, "
              f"mean seen by a starting worker {result['workers_in_flight']['mean_at_start']}")
        print(f"{'call':44} {'count':>7} {'total s':>9} {'mean ms':>9} {'max ms':>9}")
        for name, c in result["calls"].items():
            print(f"{name:44} {c['count']:>7} {c['total_s']:>9} {c['mean_ms']:>9} {c['max_ms']:>9}")
        if args.py_spy:
            print_hot_frames(work / "drain.folded")
        print(f"work dir: {work}")
    finally:
        conn.release()
        delete_vhost(vhost)
        r.flushdb()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        main()
