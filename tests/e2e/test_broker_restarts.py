"""RabbitMQ and Redis restart under a running mesh: every service reconnects by itself, and a
contact that arrives during or after the outage still becomes a ticket assigned to an agent.

The brokers here are the test's own (a private RabbitMQ node and an AOF Redis, see
devenv/private_servers.py), so restarting them disturbs nothing else on the machine. The phone
system is simulated the way real ones behave: a webhook answered 503 is retried until it is
accepted, and the test insists on seeing that 503, so the outage really was observed.
"""
from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Awaitable, Callable

import aiohttp

from devenv.mesh import TEST_CTI_TOKEN, Mesh, isolated_env
from devenv.private_servers import PrivateRabbit, PrivateRedis
from shared.roster import hash_password
from shared.testing.asyncio_helpers import wait_healthy, wait_until
from shared.testing.plugin import AsyncEventListener

OUTAGE_TIMEOUT = 60.0
ROSTER = """
agents:
  - agent_id: zhou.jie
    name: 周杰
    password_hash: {hash}
    skills: {{general: 3}}
    languages: [zh, en]
    capacity: {{phone: 20, chat: 5, email: 20}}
"""


async def post_missed_call(http: aiohttp.ClientSession, phone_url: str, call_id: str,
                           on_refused: Callable[[], Awaitable[None]] | None = None) -> list[int]:
    """Send newCall + hangup like a PBX: retry each until 200; return every status seen.

    A refusal is expected only during an outage the caller arranged (``on_refused`` given).

    ``on_refused`` runs (in the background) the first time the webhook refuses: the outage
    lasts until the phone system has actually been turned away, then the server comes back.
    """
    statuses = []
    recovery: asyncio.Task | None = None
    deadline = time.monotonic() + OUTAGE_TIMEOUT
    for event in ({"event": "newCall"}, {"event": "hangup", "cause": "cancel"}):
        # One caller per call: repeated missed calls from one number fold into one ticket.
        caller = f"+86137{int(call_id[-8:], 16) % 10 ** 8:08d}"
        body = {**event, "callId": call_id, "from": caller, "to": "+864008001234", "direction": "in"}
        while True:
            try:
                async with http.post(f"{phone_url}/api/v1/cti/{TEST_CTI_TOKEN}", json=body) as response:
                    statuses.append(response.status)
                    if response.status == 200:
                        break
                    assert response.status == 503, await response.text()
            except aiohttp.ClientConnectionError:
                statuses.append(0)
            assert on_refused is not None, f"the webhook refused {call_id} outside an outage: {statuses[-3:]}"
            if recovery is None:
                recovery = asyncio.create_task(on_refused())
            assert time.monotonic() < deadline, f"the webhook never accepted {call_id}: {statuses[-10:]}"
            # Retry once there is a reason to: the server is back and the webhook reports healthy.
            await asyncio.wait({recovery}, timeout=OUTAGE_TIMEOUT)
            await wait_healthy(phone_url, timeout=OUTAGE_TIMEOUT)
    if recovery is not None:
        await recovery
    return statuses


async def assigned_after_call(amqp_uri: str, http: aiohttp.ClientSession, phone_url: str) -> None:
    """A missed call becomes a ticket_received and then a ticket_assigned to our one agent."""
    call_id = f"call-{uuid.uuid4().hex[:8]}"
    async with AsyncEventListener(amqp_uri, "intake_phone", ["ticket_received"]) as received, \
            AsyncEventListener(amqp_uri, "dispatcher", ["ticket_assigned"]) as assigned:
        await post_missed_call(http, phone_url, call_id)
        _, ticket = await received.wait_for(lambda t, b: b["source"].get("call_id") == call_id, timeout=20)
        await assigned.wait_for(lambda t, b: b["ticket_id"] == ticket["ticket_id"] and b["agent_id"] == "zhou.jie",
                                timeout=OUTAGE_TIMEOUT)


async def worklist(http: aiohttp.ClientSession, desk_url: str) -> list[str]:
    async with http.get(f"{desk_url}/api/tickets") as response:
        assert response.status == 200, await response.text()
        return [t["ticket_id"] for t in (await response.json())["tickets"]]


async def wait_for_worklist_size(http, desk_url: str, size: int) -> list[str]:
    async def big_enough() -> list[str] | None:
        try:
            tickets = await worklist(http, desk_url)
        except (aiohttp.ClientError, AssertionError):
            return None
        return tickets if len(tickets) >= size else None

    return await wait_until(big_enough, OUTAGE_TIMEOUT, f"{size} tickets in the agent's worklist")


async def test_mesh_survives_rabbitmq_and_redis_restarts(tmp_path, dovecot, sink_settings):
    rabbit_dir = Path(tempfile.mkdtemp(prefix="tm-fault-rabbit-"))  # the rabbitmq user must reach it
    rabbit, redis = PrivateRabbit(rabbit_dir), PrivateRedis(tmp_path / "redis")
    roster = tmp_path / "roster.yaml"
    roster.write_text(ROSTER.format(hash=hash_password("fault-test-pw")))
    await asyncio.gather(asyncio.to_thread(rabbit.start), asyncio.to_thread(redis.start))
    env = isolated_env(amqp_uri=rabbit.amqp_uri, redis_url=redis.url, work_dir=tmp_path, imap_port=dovecot.port,
                       smtp_port=sink_settings.smtp_port, TM_RABBIT_MGMT_URL=rabbit.mgmt_url,
                       TM_ROSTER_FILE=str(roster))
    mesh = Mesh(env, tmp_path / "log")
    try:
        await asyncio.to_thread(mesh.start)
        desk, phone = mesh.url("agent_desk"), mesh.url("intake_phone")
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # 127.0.0.1 cookies
            async with http.post(f"{desk}/api/login", json={"agent_id": "zhou.jie", "password": "fault-test-pw"}) as r:
                assert r.status == 200, await r.text()
            async with http.post(f"{desk}/api/presence", json={"presence": "online"}) as r:
                assert r.status == 200, await r.text()

            await assigned_after_call(rabbit.amqp_uri, http, phone)
            assert len(await wait_for_worklist_size(http, desk, 1)) == 1

            # RabbitMQ away: the webhook answers 503 until the broker is back, then the ticket flows.
            await asyncio.to_thread(rabbit.stop)
            statuses = await post_missed_call(http, phone, f"call-{uuid.uuid4().hex[:8]}",
                                              on_refused=lambda: asyncio.to_thread(rabbit.start))
            # newCall writes only Redis (200); the hangup must publish, so it is refused until the broker is back.
            assert statuses[0] == 200 and 503 in statuses and statuses[-1] == 200, statuses
            assert len(await wait_for_worklist_size(http, desk, 2)) == 2

            # Redis away: the same.
            await asyncio.to_thread(redis.stop)
            statuses = await post_missed_call(http, phone, f"call-{uuid.uuid4().hex[:8]}",
                                              on_refused=lambda: asyncio.to_thread(redis.start))
            assert 503 in statuses and statuses[-1] == 200, statuses
            tickets = await wait_for_worklist_size(http, desk, 3)
            assert len(set(tickets)) == 3, tickets  # three calls, three tickets, none twice

            # And after both restarts, a fresh contact is assigned promptly.
            await assigned_after_call(rabbit.amqp_uri, http, phone)
            assert len(await wait_for_worklist_size(http, desk, 4)) == 4
        assert mesh.exited() == {}, f"a service died instead of reconnecting: {mesh.exited()}"
    finally:
        await asyncio.to_thread(mesh.stop)
        await asyncio.gather(asyncio.to_thread(rabbit.stop), asyncio.to_thread(redis.stop))
        shutil.rmtree(rabbit_dir, ignore_errors=True)
