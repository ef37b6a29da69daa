"""The mesh: chat tickets injected at intake_chat's HTTP API → ``ticket_assigned`` observed.

The services run as separate processes (devenv.mesh, as ``./dev up`` runs them) on a vhost and
Redis database of the benchmark's own. A roster of agents with room for every ticket is put
online by ``agent_presence_changed`` events (the agent desk's event, sent here directly so no
browser is needed), with offers off (write_rules, as every mesh benchmark:
an unaccepted offer expires after its timeout and is assigned again, work that grows with the
load and is not intake → assigned), then N first messages of N visitors are posted with a bounded number in
flight. Per ticket, latency is the POST's start → the moment the benchmark's consumer sees the
dispatcher's ``ticket_assigned``; throughput is N over first POST → last assignment.
"""
from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import redis
import yaml

from bench.stats import Measurement, summarize
from devenv.mesh import Mesh, isolated_env
from shared import events as ev
from shared.amqp import EventPublisher, connect
from shared.roster import hash_password
from shared.testing.plugin import AMQP_BASE, create_vhost, delete_vhost

MESH_SERVICES = ("dispatcher", "sla_watcher", "notifier", "agent_desk", "intake_chat")
# intake_chat's per-address abuse limits off: the benchmark's thousands of visitors share one address.
BENCH_RATE_LIMITS = ("ip_connects=0/60,ip_messages=0/60,ip_conversations=0/3600,session_messages=0/60,"
                     "session_uploads=0/3600,session_transcripts=0/3600")
BENCH_AGENTS = 20
RULES = Path(__file__).resolve().parents[1] / "deploy" / "config" / "routing.yaml"


def write_roster(path: Path, tickets: int) -> None:
    capacity = tickets  # room for the burst and the paced run on any agent
    pw = hash_password("bench-password", salt=b"bench-salt-bytes")
    lines = ["agents:"]
    for i in range(BENCH_AGENTS):
        lines += [f"  - agent_id: bench.{i:02d}", f"    name: Bench {i}", f"    password_hash: '{pw}'",
                  "    skills: {general: 3, billing: 3, technical: 3}", "    languages: [zh, en]",
                  f"    capacity: {{chat: {capacity}, email: 10, phone: 1}}"]
    path.write_text("\n".join(lines) + "\n")


def write_rules(path: Path) -> None:
    """The deployed rules with offers off."""
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    data.setdefault("routing", {})["offer_timeout_seconds"] = 0
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")


async def put_agents_online(amqp_uri: str) -> None:
    conn = await connect(amqp_uri, name="bench")
    publisher = EventPublisher(conn, ev.AGENT_DESK)
    await publisher.start()
    for i in range(BENCH_AGENTS):
        await publisher.emit(ev.AGENT_PRESENCE_CHANGED, now=datetime.now(timezone.utc), trace_id=ev.new_id(),
                             agent_id=f"bench.{i:02d}", presence="online")
    await conn.close()


class AssignmentClock:
    """Notes when each ``ticket_assigned`` reaches the benchmark (one exclusive queue, no parsing
    beyond the ticket id, so the observer costs the two cores as little as possible)."""

    def __init__(self, amqp_uri: str):
        self.amqp_uri = amqp_uri
        self.seen_at: dict[str, float] = {}
        self._wanted = 0
        self._enough = asyncio.Event()

    async def __aenter__(self) -> "AssignmentClock":
        import aio_pika

        self._conn = await aio_pika.connect(self.amqp_uri)
        channel = await self._conn.channel()
        await channel.set_qos(prefetch_count=500)
        exchange = await channel.declare_exchange(ev.exchange_name(ev.DISPATCHER), aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key=ev.TICKET_ASSIGNED)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            now = time.perf_counter()
            ticket_id = json.loads(message.body)["ticket_id"]
            self.seen_at.setdefault(ticket_id, now)
            await message.ack()
            if self._wanted and len(self.seen_at) >= self._wanted:
                self._enough.set()

        await queue.consume(on_message)
        return self

    async def wait_for_count(self, count: int, timeout: float) -> None:
        self._wanted = count
        if len(self.seen_at) < count:
            await asyncio.wait_for(self._enough.wait(), timeout)

    def reset(self) -> None:
        self.seen_at.clear()
        self._wanted = 0
        self._enough.clear()

    async def __aexit__(self, *exc: object) -> None:
        await self._conn.close()


async def inject(chat_url: str | list[str], count: int, concurrency: int, assigned: AssignmentClock,
                 rate: float | None = None) -> Measurement:
    """Post ``count`` first messages; all at once (bounded by ``concurrency``) or paced at ``rate``/s.
    Several ``chat_url`` (replicas): round robin, as a load balancer in front of them would."""
    urls = [chat_url] if isinstance(chat_url, str) else list(chat_url)
    started_at: dict[str, float] = {}
    window = asyncio.Semaphore(concurrency)
    texts = ["我的订单还没有收到，能帮我查一下吗？", "Hi, I was charged twice for order 20261122, please refund.",
             "APP 登录不了，一直报错", "How do I change my delivery address?"]

    async def post_one(i: int, http: aiohttp.ClientSession) -> None:
        if rate:
            await asyncio.sleep(max(0.0, first + i / rate - time.perf_counter()))  # the arrival schedule
        body = {"visitor_id": f"bench-visitor-{uuid.uuid4().hex}", "client_message_id": uuid.uuid4().hex,
                "text": texts[i % len(texts)], "name": f"访客 {i}", "language": "zh" if i % 2 == 0 else "en"}
        async with window:
            t0 = time.perf_counter()
            async with http.post(f"{urls[i % len(urls)]}/api/chat/messages", json=body) as response:
                payload = await response.json()
                if response.status != 202:
                    raise RuntimeError(f"intake_chat answered {response.status}: {payload}")
            started_at[payload["ticket_id"]] = t0

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        first = time.perf_counter()
        await asyncio.gather(*(post_one(i, http) for i in range(count)))
        await assigned.wait_for_count(count, timeout=600)
    latencies = [assigned.seen_at[t] - t0 for t, t0 in started_at.items()]
    last = max(assigned.seen_at[t] for t in started_at)
    name = f"mesh paced at {rate:g}/s: POST→ticket_assigned" if rate else "mesh burst: chat POST→ticket_assigned"
    return summarize(name, count, last - first, latencies, concurrency=concurrency, offered_rate=rate)


async def measure_mesh(count: int, concurrency: int, redis_db: int, paced_rate: float,
                       work_dir: Path | None = None) -> tuple[Measurement, Measurement]:
    """Throughput (a burst of ``count``) and latency when not saturated (paced at ``paced_rate``/s)."""
    work_dir = work_dir or Path(tempfile.mkdtemp(prefix="tm-bench-"))
    vhost = await asyncio.to_thread(create_vhost, "tm-bench")
    amqp_uri = f"{AMQP_BASE}/{vhost}"
    redis_url = f"redis://127.0.0.1:6379/{redis_db}"
    redis.Redis.from_url(redis_url).flushdb()
    roster, rules = work_dir / "roster.yaml", work_dir / "routing.yaml"
    write_roster(roster, count)
    write_rules(rules)
    env = isolated_env(amqp_uri=amqp_uri, redis_url=redis_url, work_dir=work_dir, imap_port=1, smtp_port=1,
                       TM_ROSTER_FILE=str(roster), TM_ROUTING_RULES_FILE=str(rules), TM_LOG_LEVEL="WARNING",
                       TM_CHAT_RATE_LIMITS=BENCH_RATE_LIMITS)  # every benchmark visitor posts from 127.0.0.1
    mesh = Mesh(env, work_dir / "log", quiet=True)
    try:
        await asyncio.to_thread(mesh.start, MESH_SERVICES)
        await put_agents_online(amqp_uri)
        async with AssignmentClock(amqp_uri) as assigned:
            # Warm-up ticket: proves presence was applied and the path is hot before timing.
            await inject(mesh.url("intake_chat"), 1, 1, assigned)
            assigned.reset()
            burst = await inject(mesh.url("intake_chat"), count, concurrency, assigned)
            assigned.reset()
            paced = await inject(mesh.url("intake_chat"), max(50, int(paced_rate * 15)), concurrency, assigned,
                                 rate=paced_rate)
        if mesh.exited():
            raise RuntimeError(f"a service died during the benchmark: {mesh.exited()}")
        return burst, paced
    finally:
        await asyncio.to_thread(mesh.stop)
        await asyncio.to_thread(delete_vhost, vhost)
        redis.Redis.from_url(redis_url).flushdb()
