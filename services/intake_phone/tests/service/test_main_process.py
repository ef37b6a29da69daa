"""``python -m services.intake_phone`` as ops run it: serves, then stops cleanly on SIGTERM."""
import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp

from shared.testing.asyncio_helpers import free_port, wait_healthy

from services.intake_phone.tests.conftest import CTI_TOKEN

REPO = Path(__file__).resolve().parents[4]


async def test_process_serves_then_exits_zero_on_sigterm(amqp_uri, redis_url):
    port = free_port()
    env = {**os.environ, "TM_AMQP_URI": amqp_uri, "TM_REDIS_URL": redis_url, "TM_CTI_TOKEN": CTI_TOKEN,
           "TM_PHONE_PORT": str(port), "TM_LOG_FORMAT": "json"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.intake_phone", cwd=REPO, env=env,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            await wait_healthy(f"http://127.0.0.1:{port}")
            hangup = {"event": "hangup", "callId": "p-1", "from": "13812345678", "direction": "in", "cause": "cancel"}
            async with http.post(f"/api/v1/cti/{CTI_TOKEN}", json=hangup) as resp:
                assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = [json.loads(line) for line in (await proc.stderr.read()).decode().splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    assert "call_ticketed" in events and events[-1] == "service_stopped"
    assert not any(CTI_TOKEN in json.dumps(line) for line in lines)  # the URL's secret never reaches the log
    opened = next(line for line in lines if line["event"] == "call_ticketed")
    assert opened["result"] == "opened" and opened["kind"] == "callback" and opened["ticket_id"]
    assert "13812345678" not in json.dumps(opened)  # the caller's number is masked
