"""The probes against the real servers, and a Redis that ./dev starts and stops itself."""
import socket
from pathlib import Path

import redis

from devenv.config import DevSettings
from devenv.servers import ServerSet, port_open, probe_amqp, probe_http, probe_redis, redis_server
from shared.testing.plugin import MGMT_URL, REDIS_BASE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_probes_see_the_running_redis_rabbitmq_and_management_api(redis_url):
    assert probe_redis(redis_url) is True
    assert probe_amqp("127.0.0.1", 5672) is True
    assert probe_http(f"{MGMT_URL}/api/overview") is True
    assert probe_http(f"{MGMT_URL}/api/no-such-endpoint") is False


def test_redis_is_reused_when_it_answers(redis_url, tmp_path):
    settings = DevSettings.from_env({"TM_REDIS_URL": redis_url, "TM_VAR_DIR": str(tmp_path)})
    with ServerSet() as servers:
        servers.ensure(redis_server(settings))
        assert servers.owned == []
    assert probe_redis(redis_url) is True  # not ours: still running


def test_redis_is_started_when_absent_and_stopped_on_exit(tmp_path: Path):
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    settings = DevSettings.from_env({"TM_REDIS_URL": url, "TM_VAR_DIR": str(tmp_path)})
    assert probe_redis(url) is False
    with ServerSet() as servers:
        servers.ensure(redis_server(settings))
        assert [o.name for o in servers.owned] == ["Redis"]
        client = redis.Redis.from_url(url)
        client.set("tm:devenv:probe", "是")
        assert client.get("tm:devenv:probe").decode() == "是"
        assert client.config_get("save")["save"] == ""  # disposable data: no snapshots
        client.close()
    assert port_open("127.0.0.1", port) is False
    assert (tmp_path / "log" / "redis.log").exists()
    assert REDIS_BASE  # the shared server was never touched
