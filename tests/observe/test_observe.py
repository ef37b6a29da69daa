"""Health, metrics and ``ticketmesh status`` against the real servers and real service processes."""
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from devenv.config import REPO_ROOT
from devenv.demo import CALLS, send_missed_call
from devenv.config import DevSettings
from devenv.mesh import TEST_CTI_TOKEN, Mesh
from devenv.process import spawn_logged, stop_processes
from shared import events as ev
from shared import heartbeat, metrics
from shared.amqp import EventConsumer, EventPublisher, connect
from shared.status_cli import QUEUES_SHOWN
from shared.testing.asyncio_helpers import free_port
from shared.testing.plugin import MGMT_URL, poll_until
from shared.topology import DEAD_LETTER_QUEUE

from services.intake_phone.config import Settings as PhoneSettings
from services.intake_phone.service import make_service


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def scrape(url: str) -> dict[tuple, float]:
    status, raw = get(f"{url}/metrics")
    assert status == 200, status
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(raw.decode()) for s in fam.samples}


def sample(samples: dict, name: str, **labels) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def mesh_env(amqp_uri, redis_url, tmp_path, services):
    from devenv.mesh import HTTP_PORT_VARS

    env = {"TM_AMQP_URI": amqp_uri, "TM_REDIS_URL": redis_url, "TM_CTI_TOKEN": TEST_CTI_TOKEN,
           "TM_LOG_FORMAT": "json", "TM_DATA_DIR": str(tmp_path / "data"), "TM_RABBIT_MGMT_URL": MGMT_URL}
    for name in services:
        env[HTTP_PORT_VARS[name]] = str(free_port())
    return env


def test_a_small_mesh_counts_its_events_is_ready_and_shows_in_status(amqp_uri, redis_url, redis_client, tmp_path):
    services = ["intake_phone", "dispatcher", "sla_watcher"]
    env = mesh_env(amqp_uri, redis_url, tmp_path, services)
    with Mesh(env, tmp_path / "log").start(services) as mesh:
        phone, dispatcher, sla = (mesh.url(s) for s in services)
        settings = DevSettings.from_env({"TM_PHONE_PORT": env["TM_PHONE_PORT"], "TM_CTI_TOKEN": TEST_CTI_TOKEN})
        send_missed_call(settings, CALLS[0])

        # The ticket travels intake_phone → dispatcher → sla_watcher; each hop shows in /metrics.
        out = poll_until(lambda: sample(s := scrape(phone), "ticketmesh_events_out_total",
                                        event_type="ticket_received") and s, what="intake_phone's events_out")
        assert sample(out, "ticketmesh_events_out_total", service="intake_phone", replica="intake_phone-1") >= 1
        seen = poll_until(lambda: sample(s := scrape(dispatcher), "ticketmesh_handler_seconds_count",
                                         event_type="ticket_received") and s, what="dispatcher's handler done")
        assert sample(seen, "ticketmesh_events_in_total", service="dispatcher", source="intake_phone",
                      event_type="ticket_received") == 1
        assert sample(seen, "ticketmesh_queue_lag_seconds_count", event_type="ticket_received") >= 1
        assert sample(seen, "ticketmesh_events_out_total", event_type="ticket_classified") >= 1
        poll_until(lambda: sample(scrape(sla), "ticketmesh_events_in_total", event_type="ticket_classified"),
                   what="sla_watcher's events_in")
        # agents by presence is read from the dispatcher's store at scrape time
        redis_client.hset("tm:dispatcher:presence", mapping={"a1": "online", "a2": "online", "a3": "away"})
        agents = scrape(dispatcher)
        assert sample(agents, "ticketmesh_agents", presence="online") == 2
        assert sample(agents, "ticketmesh_agents", presence="away") == 1

        for url in (phone, dispatcher, sla):
            status, body = get(f"{url}/readyz")
            assert status == 200, body
            assert set(json.loads(body)["checks"].values()) == {"ok"}

        # Every replica writes its heartbeat; the status command reads them and the broker.
        poll_until(lambda: len(heartbeat.replicas(redis_client)) == 3, what="three heartbeats")
        cli_env = {**os.environ, **env, "PYTHONPATH": str(REPO_ROOT)}
        done = subprocess.run([sys.executable, "-m", "shared.cli", "status", "--json"], env=cli_env, cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=60)
        data = json.loads(done.stdout)
        assert {(r["service"], r["replica"]) for r in data["replicas"]} == {(s, f"{s}-1") for s in services}
        dispatcher_row = next(r for r in data["replicas"] if r["service"] == "dispatcher")
        assert dispatcher_row["http"].endswith(f":{env['TM_DISPATCHER_HEALTH_PORT']}")
        queues = {q["queue"]: q for q in data["queues"]}
        # (the management API's consumer counts lag a few seconds behind a new queue: not asserted)
        assert queues["evt-intake_phone-ticket_received--dispatcher.handle_phone_ticket_received"]["messages"] == 0
        assert queues[DEAD_LETTER_QUEUE]["messages"] == 0
        assert data["agents"] == {"online": 2, "away": 1}
        assert "no replica of notifier is running" in data["problems"]
        assert "no replica of dispatcher is running" not in data["problems"]
        assert done.returncode == 1  # problems: services missing

        text = subprocess.run([sys.executable, "-m", "shared.cli", "status"], env=cli_env, cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=60).stdout
        assert "REPLICAS" in text and "sla_watcher-1" in text and "online 2" in text and "dead letters: 0" in text
        # the text shows the deepest queues (all empty here: by name), then how many more --json has
        shown = [q["queue"] for q in data["queues"]][:QUEUES_SHOWN]
        assert all(name in text for name in shown)
        if len(data["queues"]) > QUEUES_SHOWN:
            assert f"... {len(data['queues']) - QUEUES_SHOWN} more (--json has all)" in text
    # A graceful stop removes the heartbeat at once (no waiting for the key to expire).
    assert heartbeat.replicas(redis_client) == []


def closed_port_redis() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


async def test_asyncio_service_is_not_ready_without_redis(amqp_uri, tmp_path):
    settings = PhoneSettings.from_env({"TM_AMQP_URI": amqp_uri, "TM_REDIS_URL": closed_port_redis(),
                                       "TM_CTI_TOKEN": TEST_CTI_TOKEN, "TM_PHONE_PORT": "0",
                                       "TM_DATA_DIR": str(tmp_path)})
    service = make_service(settings)
    await service.start()
    try:
        import aiohttp

        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{service.port}/readyz") as resp:
                body = await resp.json()
                assert resp.status == 503
                assert body["checks"] == {"amqp": "ok", "redis": "failing", "consumers": "ok"}
            async with http.get(f"http://127.0.0.1:{service.port}/metrics") as resp:
                assert resp.status == 200 and "ticketmesh_events_out" in await resp.text()
    finally:
        await service.stop()


def test_nameko_service_is_not_ready_without_redis(amqp_uri, tmp_path):
    port = free_port()
    env = {**os.environ, "TM_AMQP_URI": amqp_uri, "TM_REDIS_URL": closed_port_redis(), "TM_LOG_FORMAT": "json",
           "TM_SLA_WATCHER_HEALTH_PORT": str(port), "TM_REPLICA_ID": "sla-no-redis", "PYTHONPATH": str(REPO_ROOT)}
    proc = spawn_logged([sys.executable, "-m", "services.sla_watcher"], tmp_path / "sla.log", env=env, cwd=REPO_ROOT)
    try:
        # Not ready until its consumers run, whatever Redis does: wait for those, then judge Redis.
        status, body = poll_until(lambda: (r := get(f"http://127.0.0.1:{port}/readyz"))[0]
                                  and json.loads(r[1])["checks"]["consumers"] == "ok" and r, timeout=30,
                                  what="sla_watcher's /readyz with its consumers running")
        assert status == 503, body
        answer = json.loads(body)
        assert answer["checks"] == {"redis": "failing", "rabbitmq": "ok", "consumers": "ok"}
        assert answer["service"] == "sla_watcher" and answer["replica"] == "sla-no-redis"
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200  # alive, only not ready
    finally:
        stop_processes([proc], 15)


def value(name, **labels):
    return REGISTRY.get_sample_value(name, {"service": "observe_test", "replica": "r1", **labels}) or 0.0


async def test_consumer_and_publisher_hooks_count_handled_failed_and_published(amqp_uri):
    metrics.configure("observe_test", "r1")
    connection = await connect(amqp_uri, name="observe-test")
    publisher = EventPublisher(connection, ev.AGENT_DESK)
    consumer = EventConsumer(connection, "observe_test", "r1")
    handled = []

    async def handler(event):
        handled.append(event.agent_id)
        if event.agent_id == "poison":
            raise ValueError("cannot handle this one")

    consumer.subscribe(ev.AGENT_DESK, ev.AGENT_PRESENCE_CHANGED, "on_presence", handler)
    before = {k: value(k, source="agent_desk", event_type="agent_presence_changed")
              for k in ("ticketmesh_events_in_total", "ticketmesh_handler_seconds_count")}
    out_before = value("ticketmesh_events_out_total", event_type="agent_presence_changed")
    failed_before = value("ticketmesh_events_failed_total", source="agent_desk",
                          event_type="agent_presence_changed", outcome="dead_lettered")
    try:
        await publisher.start()
        await consumer.start()
        now = datetime.now(timezone.utc)
        for agent in ("ok-agent", "poison"):
            await publisher.emit(ev.AGENT_PRESENCE_CHANGED, now=now, trace_id="t-obs", agent_id=agent, presence="online")
        deadline = time.monotonic() + 10
        while value("ticketmesh_events_in_total", source="agent_desk", event_type="agent_presence_changed") \
                < before["ticketmesh_events_in_total"] + 2 or len(handled) < 2:
            assert time.monotonic() < deadline, "the consumer did not take both events"
            await __import__("asyncio").sleep(0.01)
    finally:
        await consumer.stop()
        await connection.close()
    assert value("ticketmesh_events_out_total", event_type="agent_presence_changed") == out_before + 2
    assert value("ticketmesh_handler_seconds_count", event_type="agent_presence_changed") \
        == before["ticketmesh_handler_seconds_count"] + 2
    assert value("ticketmesh_events_failed_total", source="agent_desk", event_type="agent_presence_changed",
                 outcome="dead_lettered") == failed_before + 1
