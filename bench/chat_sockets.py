"""Chat at scale: N customers on N WebSockets at once, each message timed to the agent's console.

intake_chat, the dispatcher and the agent desk run as separate processes (devenv.mesh, as
``./dev up`` runs them) on a vhost and Redis database of the benchmark's own. Agents sign in to
the agent desk and hold its console WebSocket, as browsers would. Then:

1. N customers open N WebSockets and each sends a first message; the dispatcher offers the N
   tickets to the agents (the run waits until every ticket reached a console).
2. Burst: every customer sends M more messages, one after the other (the next once the previous
   was acknowledged), all N customers at the same time. Per message: its send → intake_chat's
   ``ack`` (confirmed by the broker) and its send → the agent console's ``customer_message``
   push for it. Throughput is the N×M messages over the first send → the last console push.
   With N messages always in flight, a burst's latency is mostly waiting in line (N ÷ rate).
3. Paced: with the N sockets still open, messages arrive at ``paced_rate``/s, each from the
   next customer in turn: the latency of a message when the service is not saturated.

The client side (N sockets, the consoles and the timing) shares the machine's two cores with
the three services, so figures compare runs on this machine, not deployments.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import redis

from bench.mesh_throughput import BENCH_AGENTS, BENCH_RATE_LIMITS, write_roster
from bench.stats import Measurement, summarize
from devenv.mesh import Mesh, isolated_env
from shared.testing.plugin import AMQP_BASE, create_vhost, delete_vhost

SERVICES = ("dispatcher", "agent_desk", "intake_chat")
PASSWORD = "bench-password"
TEXTS = ("我的订单还没有收到，能帮我查一下吗？", "Hi, I was charged twice, please refund.", "还在吗？", "Thanks!")


class Consoles:
    """The agents' console sockets: when each ticket and each customer message reached one."""

    def __init__(self, desk_url: str):
        self.desk_url = desk_url
        self.tickets_seen: set[str] = set()
        self.message_seen_at: dict[str, float] = {}
        self._sessions: list[aiohttp.ClientSession] = []
        self._tasks: list[asyncio.Task] = []
        self._changed = asyncio.Event()

    async def sign_in(self, agents: int) -> None:
        for i in range(agents):
            # unsafe=True: keep the session cookie of an IP-address host (127.0.0.1)
            http = aiohttp.ClientSession(base_url=self.desk_url, cookie_jar=aiohttp.CookieJar(unsafe=True))
            self._sessions.append(http)
            async with http.post("/api/login", json={"agent_id": f"bench.{i:02d}", "password": PASSWORD}) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"bench.{i:02d} could not sign in: {resp.status} {await resp.text()}")
            ws = await http.ws_connect("/ws", origin=self.desk_url)
            async with http.post("/api/presence", json={"presence": "online"}) as resp:
                if resp.status >= 300:
                    raise RuntimeError(f"bench.{i:02d} could not go online: {resp.status}")
            self._tasks.append(asyncio.create_task(self._read(ws)))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            now = time.perf_counter()
            frame = json.loads(msg.data)
            if frame.get("type") == "customer_message":
                self.message_seen_at.setdefault(frame["message_id"], now)
            ticket = frame.get("ticket")
            if isinstance(ticket, dict) and ticket.get("ticket_id"):
                self.tickets_seen.add(ticket["ticket_id"])
            self._changed.set()

    async def wait(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            self._changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{what}: not reached within {timeout:g} s")
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 1.0))
            except asyncio.TimeoutError:
                pass

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for http in self._sessions:
            await http.close()


class Customer:
    def __init__(self, http: aiohttp.ClientSession, chat_url: str, index: int):
        self.http = http
        self.chat_url = chat_url
        self.index = index
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.ticket_id = ""
        self.acks: dict[str, asyncio.Future] = {}
        self.sent_at: dict[str, float] = {}
        self.acked_at: dict[str, float] = {}
        self.texts: dict[str, str] = {}
        self.resends = 0
        self._welcome = asyncio.Event()

    async def connect(self) -> None:
        self.ws = await self.http.ws_connect(self.chat_url.replace("http", "ws", 1) + "/ws", max_msg_size=0)
        asyncio.get_running_loop().create_task(self._read())
        await self.ws.send_json({"type": "hello", "session": f"bench_{uuid.uuid4().hex}", "name": f"访客 {self.index}",
                                 "language": "zh" if self.index % 2 == 0 else "en"})
        await asyncio.wait_for(self._welcome.wait(), 120)

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            if frame.get("type") == "welcome":
                self._welcome.set()
            elif frame.get("type") == "ack":
                self.acked_at[frame["client_message_id"]] = time.perf_counter()
                self.ticket_id = frame["ticket_id"]
                future = self.acks.pop(frame["client_message_id"], None)
                if future is not None and not future.done():
                    future.set_result(frame)
            elif frame.get("type") == "error" and frame.get("code") == "unavailable" and frame.get("client_message_id"):
                # As the widget does: the same message again, with the same id, a moment later.
                self.resends += 1
                cmid = frame["client_message_id"]
                asyncio.get_running_loop().call_later(0.5, lambda: asyncio.ensure_future(self.ws.send_json(
                    {"type": "message", "client_message_id": cmid, "text": self.texts[cmid]})))
            elif frame.get("type") == "error":
                future = self.acks.pop(frame.get("client_message_id", ""), None)
                if future is not None and not future.done():
                    future.set_exception(RuntimeError(f"intake_chat refused a message: {frame}"))

    async def say(self, text: str) -> str:
        assert self.ws is not None
        cmid = uuid.uuid4().hex
        future = asyncio.get_running_loop().create_future()
        self.acks[cmid] = future
        self.sent_at[cmid] = time.perf_counter()
        self.texts[cmid] = text
        await self.ws.send_json({"type": "message", "client_message_id": cmid, "text": text})
        await asyncio.wait_for(future, 120)
        return cmid


async def paced_messages(customers: list[Customer], consoles: Consoles, rate: float, count: int) -> Measurement:
    start = time.perf_counter()

    async def one(k: int) -> str:
        await asyncio.sleep(max(0.0, start + k / rate - time.perf_counter()))  # the arrival schedule
        customer = customers[k % len(customers)]
        return await customer.say(TEXTS[k % len(TEXTS)])

    sent = await asyncio.gather(*(one(k) for k in range(count)))
    await consoles.wait(lambda: all(m in consoles.message_seen_at for m in sent), 300, "paced messages pushed")
    sent_at = {m: t for c in customers for m, t in c.sent_at.items()}
    last = max(consoles.message_seen_at[m] for m in sent)
    return summarize(f"chat: {len(customers)} sockets, paced {rate:g}/s, message → agent console", count,
                     last - start, [consoles.message_seen_at[m] - sent_at[m] for m in sent], offered_rate=rate)


async def run_conversations(chat_url: str, desk_url: str, sockets: int, messages: int,
                            paced_rate: float = 50.0) -> dict[str, Measurement]:
    consoles = Consoles(desk_url)
    await consoles.sign_in(BENCH_AGENTS)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        customers = [Customer(http, chat_url, i) for i in range(sockets)]
        await asyncio.gather(*(c.connect() for c in customers))
        opened = time.perf_counter()
        await asyncio.gather(*(c.say(TEXTS[c.index % len(TEXTS)]) for c in customers))
        await consoles.wait(lambda: all(c.ticket_id in consoles.tickets_seen for c in customers), 300,
                            "every ticket offered to a console")
        opening_seconds = time.perf_counter() - opened

        async def talk(customer: Customer) -> list[str]:
            return [await customer.say(TEXTS[(customer.index + k) % len(TEXTS)]) for k in range(messages)]

        first = time.perf_counter()
        sent = [cmid for cmids in await asyncio.gather(*(talk(c) for c in customers)) for cmid in cmids]
        await consoles.wait(lambda: all(m in consoles.message_seen_at for m in sent), 300,
                            "every message pushed to a console")
        last = max(consoles.message_seen_at[m] for m in sent)
        sent_at = {m: t for c in customers for m, t in c.sent_at.items()}
        resends = sum(c.resends for c in customers)
        acked_at = {m: t for c in customers for m, t in c.acked_at.items()}
        paced = await paced_messages(customers, consoles, paced_rate, max(100, int(paced_rate * 10)))
        for c in customers:
            await c.ws.close()
    await consoles.close()
    extra = {"sockets": sockets, "messages_per_socket": messages, "agents": BENCH_AGENTS,
             "opening_seconds": round(opening_seconds, 2), "resends_after_unavailable": resends}
    return {
        "console": summarize(f"chat: {sockets} sockets, message → agent console", len(sent), last - first,
                             [consoles.message_seen_at[m] - sent_at[m] for m in sent], **extra),
        "ack": summarize(f"chat: {sockets} sockets, message → confirmed ack", len(sent),
                         max(acked_at[m] for m in sent) - first, [acked_at[m] - sent_at[m] for m in sent], **extra),
        "paced": paced,
    }


async def measure_chat_sockets(sockets: int = 500, messages: int = 4, redis_db: int = 15, paced_rate: float = 50.0,
                               work_dir: Path | None = None) -> dict[str, Measurement]:
    work_dir = work_dir or Path(tempfile.mkdtemp(prefix="tm-bench-chat-"))
    vhost = await asyncio.to_thread(create_vhost, "tm-bench-chat")
    amqp_uri = f"{AMQP_BASE}/{vhost}"
    redis_url = f"redis://127.0.0.1:6379/{redis_db}"
    redis.Redis.from_url(redis_url).flushdb()
    roster = work_dir / "roster.yaml"
    write_roster(roster, sockets)
    env = isolated_env(amqp_uri=amqp_uri, redis_url=redis_url, work_dir=work_dir, imap_port=1, smtp_port=1,
                       TM_ROSTER_FILE=str(roster), TM_LOG_LEVEL="WARNING", TM_CHAT_RATE_LIMITS=BENCH_RATE_LIMITS)
    mesh = Mesh(env, work_dir / "log", quiet=True)
    try:
        await asyncio.to_thread(mesh.start, SERVICES)
        result = await run_conversations(mesh.url("intake_chat"), mesh.url("agent_desk"), sockets, messages,
                                         paced_rate)
        if mesh.exited():
            raise RuntimeError(f"a service died during the benchmark: {mesh.exited()}")
        return result
    finally:
        await asyncio.to_thread(mesh.stop)
        await asyncio.to_thread(delete_vhost, vhost)
        redis.Redis.from_url(redis_url).flushdb()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.chat_sockets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=500, help="customers connected at once")
    parser.add_argument("--messages", type=int, default=4, help="messages per customer after the first")
    parser.add_argument("--paced-rate", type=float, default=50.0, help="messages/s for the latency run")
    parser.add_argument("--redis-db", type=int, default=15, help="scratch Redis database (flushed)")
    args = parser.parse_args()
    from bench.__main__ import table
    from shared.logging import configure_logging
    configure_logging("bench", level="WARNING", fmt="console")
    results = asyncio.run(measure_chat_sockets(args.sockets, args.messages, args.redis_db, args.paced_rate))
    print(table([m.as_dict() for m in results.values()]))


if __name__ == "__main__":
    main()
