"""The process supervisor with a real service: readiness, fault injection, clean stop.

intake_phone is the smallest real service; the demo's missed-call injection is checked
against it too, so ./dev up's traffic matches the service's CTI contract.
"""
import json
import signal
import socket

import pytest

from devenv.config import DevSettings
from devenv.demo import CALLS, send_missed_call
from devenv.mesh import TEST_CTI_TOKEN, Mesh, MeshError
from devenv.servers import http_get, port_open
from shared.testing.asyncio_helpers import free_port

CTI_TOKEN = TEST_CTI_TOKEN


@pytest.fixture
def phone_env(amqp_uri, redis_url, tmp_path):
    return {"TM_AMQP_URI": amqp_uri, "TM_REDIS_URL": redis_url, "TM_PHONE_PORT": str(free_port()),
            "TM_CTI_TOKEN": CTI_TOKEN, "TM_LOG_FORMAT": "json", "TM_DATA_DIR": str(tmp_path / "data")}


def health(mesh: Mesh, service: str) -> dict | None:
    raw = http_get(f"{mesh.url(service)}/healthz")
    return json.loads(raw) if raw is not None else None


def test_mesh_starts_a_service_ready_and_stops_it_gracefully(phone_env, tmp_path):
    mesh = Mesh(phone_env, tmp_path / "log")
    with mesh.start(["intake_phone"]):
        assert health(mesh, "intake_phone")["status"] == "ok"
        process = mesh.processes["intake_phone"]
    assert process.proc.returncode == 0  # SIGTERM → graceful exit, not SIGKILL
    assert not port_open("127.0.0.1", int(phone_env["TM_PHONE_PORT"]))
    log = (tmp_path / "log" / "intake_phone.log").read_text()
    assert "service_started" in log and "service_stopped" in log
    assert mesh.processes == {}


def test_killed_service_is_reported_and_restart_brings_it_back(phone_env, tmp_path):
    with Mesh(phone_env, tmp_path / "log").start(["intake_phone"]) as mesh:
        first_pid = mesh.pid("intake_phone")
        mesh.kill("intake_phone")
        assert mesh.exited() == {"intake_phone": -signal.SIGKILL}
        assert health(mesh, "intake_phone") is None
        mesh.restart("intake_phone")
        assert mesh.pid("intake_phone") != first_pid
        assert health(mesh, "intake_phone")["status"] == "ok"
        assert mesh.exited() == {}


def test_service_that_cannot_start_fails_with_the_tail_of_its_log(phone_env, tmp_path):
    mesh = Mesh({**phone_env, "TM_CTI_TOKEN": "short"}, tmp_path / "log")
    with pytest.raises(MeshError) as err:
        mesh.start(["intake_phone"])
    assert "intake_phone exited with code 1" in str(err.value)
    assert "TM_CTI_TOKEN" in str(err.value)  # the reason, from the log tail
    assert mesh.processes == {}


def test_unknown_service_names_are_refused(phone_env, tmp_path):
    with pytest.raises(ValueError, match="no_such_service"):
        Mesh(phone_env, tmp_path / "log").start(["no_such_service"])


def test_demo_missed_call_becomes_a_ticket(phone_env, tmp_path, event_listener):
    settings = DevSettings.from_env({"TM_PHONE_PORT": phone_env["TM_PHONE_PORT"], "TM_CTI_TOKEN": CTI_TOKEN})
    with Mesh(phone_env, tmp_path / "log").start(["intake_phone"]):
        listener = event_listener("intake_phone", ["ticket_received"])
        line = send_missed_call(settings, CALLS[0])
        _, body = listener.wait_for(lambda t, b: b["channel"] == "phone", timeout=10)
    assert body["customer"]["phone"] == CALLS[0].caller
    assert body["ticket_id"].startswith("TM-")
    assert CALLS[0].caller in line


def test_a_port_already_in_use_is_refused_before_anything_starts(phone_env, tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(phone_env["TM_PHONE_PORT"])))
        squatter.listen(1)
        mesh = Mesh(phone_env, tmp_path / "log")
        with pytest.raises(MeshError, match="port is in use.*TM_PHONE_PORT"):
            mesh.start(["intake_phone"])
    assert mesh.processes == {}
    assert not (tmp_path / "log" / "intake_phone.log").exists()


def test_mesh_runs_two_replicas_of_a_service_on_their_own_ports_and_stops_both(phone_env, tmp_path):
    mesh = Mesh(phone_env, tmp_path / "log")
    with mesh.start(["intake_phone"], replicas={"intake_phone": 2}):
        assert mesh.replicas("intake_phone") == ["intake_phone", "intake_phone-2"]
        urls = mesh.urls("intake_phone")
        assert len(set(urls)) == 2 and urls[0] == mesh.url("intake_phone")
        answers = [json.loads(http_get(f"{u}/healthz")) for u in urls]
        assert [a["status"] for a in answers] == ["ok", "ok"]
        assert [a["replica"] for a in answers] == ["intake_phone-1", "intake_phone-2"]
        procs = [mesh.processes[k].proc for k in mesh.replicas("intake_phone")]
        assert procs[0].pid != procs[1].pid
    assert [p.returncode for p in procs] == [0, 0]
    assert not mesh.processes
    assert "service_started" in (tmp_path / "log" / "intake_phone-2.log").read_text()  # a log of its own
