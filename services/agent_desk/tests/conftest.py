"""Fixtures for agent_desk's tests: the desk in-process on a free port, signed-in clients."""
from __future__ import annotations


import aiohttp
import pytest

from services.agent_desk.config import Settings
from services.agent_desk.service import create_service
from services.agent_desk.tests.factories import PASSWORDS, write_roster

pytest_plugins = ["shared.testing.plugin"]


@pytest.fixture(scope="session")
def roster_file(tmp_path_factory) -> str:
    return str(write_roster(tmp_path_factory.mktemp("desk") / "roster.yaml"))


@pytest.fixture
async def start_desk(amqp_uri, redis_url, roster_file):
    """``await start_desk(replica_id, **env)`` → a started desk replica (stopped after the test)."""
    started = []

    async def start(replica_id: str = "desk-test", **env: str):
        settings = Settings.from_env({
            "TM_AMQP_URI": amqp_uri, "TM_REDIS_URL": redis_url, "TM_DESK_PORT": "0", "TM_DESK_SECRET": "test-secret",
            "TM_ROSTER_FILE": roster_file, "TM_REPLICA_ID": replica_id, **env,
        })
        service = create_service(settings)
        await service.start()
        started.append(service)
        return service

    yield start
    for service in reversed(started):
        await service.stop()


@pytest.fixture
async def desk(start_desk):
    return await start_desk()


@pytest.fixture
def base_url(desk) -> str:
    return f"http://127.0.0.1:{desk.port}"


@pytest.fixture
async def signed_in(base_url):
    """``await signed_in("li.na")`` → an aiohttp session carrying that agent's cookie."""
    sessions: list[aiohttp.ClientSession] = []

    async def sign_in(agent_id: str) -> aiohttp.ClientSession:
        # unsafe=True: the default jar ignores cookies set by an IP address such as 127.0.0.1.
        http = aiohttp.ClientSession(base_url, cookie_jar=aiohttp.CookieJar(unsafe=True))
        sessions.append(http)
        response = await http.post("/api/login", json={"agent_id": agent_id, "password": PASSWORDS[agent_id]})
        assert response.status == 200, await response.text()
        return http

    yield sign_in
    for http in sessions:
        await http.close()


@pytest.fixture
def publish(publish_event):
    return publish_event
