"""``python -m services.intake_chat``: on SIGTERM, browsers are told to go elsewhere and it exits 0."""
import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
from aiohttp import WSCloseCode, WSMsgType

from shared.testing.asyncio_helpers import free_port, wait_healthy

from services.intake_chat.tests.conftest import VISITOR

REPO = Path(__file__).resolve().parents[4]


async def test_sigterm_closes_sockets_with_going_away_and_exits_zero(amqp_uri, redis_url):
    port = free_port()
    env = {**os.environ, "TM_AMQP_URI": amqp_uri, "TM_REDIS_URL": redis_url, "TM_CHAT_PORT": str(port)}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.intake_chat", cwd=REPO, env=env,
                                                stderr=asyncio.subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            await wait_healthy(f"http://127.0.0.1:{port}")
            ws = await http.ws_connect("/ws")
            await ws.send_json({"type": "hello", "visitor_id": VISITOR})
            assert (await asyncio.wait_for(ws.receive_json(), 10))["type"] == "welcome"
            proc.send_signal(signal.SIGTERM)
            msg = await asyncio.wait_for(ws.receive(), 10)
            assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED) and ws.close_code == WSCloseCode.GOING_AWAY
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
