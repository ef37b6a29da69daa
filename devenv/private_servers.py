"""A RabbitMQ node and a Redis server of a test's own, to restart while the mesh runs.

Fault tests must stop and start the brokers under a running mesh; doing that to the machine's
shared RabbitMQ and Redis would break everything else using them (another test run, a
``./dev up`` demo). These start a second RabbitMQ node (its own node name, ports and data
directory; durable queues survive a restart as in production) and a Redis with AOF on (as
production runs it, so a restart keeps the working state).
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import uuid
from pathlib import Path

from devenv.process import spawn_logged, stop_processes, tail
from devenv.servers import SetupError, probe_amqp, probe_http, probe_redis, wait_until
from shared.testing.asyncio_helpers import free_port

START_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 30.0


def _give_to(path: Path, user: str) -> None:
    # rabbitmq-server drops to the `rabbitmq` user when started as root: its directory must be its.
    if os.geteuid() != 0:
        return
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, d) for d in dirs), *(os.path.join(root, f) for f in files)]:
            os.chown(name, entry.pw_uid, entry.pw_gid)


class PrivateRabbit:
    """``start()``, ``stop()``, ``restart()``; ``amqp_uri`` and ``mgmt_url`` point at it."""

    def __init__(self, workdir: Path):
        if not shutil.which("rabbitmq-server"):
            raise SetupError("rabbitmq-server is not installed: run ./dev test (it installs it) "
                             "or apt-get install rabbitmq-server")
        self.workdir = workdir
        self.port, self.mgmt_port, self.dist_port = free_port(), free_port(), free_port()
        self.node = f"tmfault{uuid.uuid4().hex[:8]}@localhost"
        self.amqp_uri = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self.mgmt_url = f"http://guest:guest@127.0.0.1:{self.mgmt_port}"
        self._proc: subprocess.Popen | None = None

    @property
    def _log(self) -> Path:
        return self.workdir / "rabbitmq-server.out"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n"
            f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {self.mgmt_port}\n")
        (self.workdir / "enabled_plugins").write_text("[rabbitmq_management].\n")
        _give_to(self.workdir, "rabbitmq")
        env = {**os.environ, "RABBITMQ_NODENAME": self.node, "RABBITMQ_DIST_PORT": str(self.dist_port),
               "RABBITMQ_CONFIG_FILE": str(self.workdir / "rabbitmq"),
               "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.workdir / "enabled_plugins"),
               "RABBITMQ_MNESIA_BASE": str(self.workdir / "mnesia"), "RABBITMQ_LOG_BASE": str(self.workdir / "log"),
               "RABBITMQ_PID_FILE": str(self.workdir / "rabbit.pid")}
        self._proc = spawn_logged(["rabbitmq-server"], self._log, env=env)
        up = wait_until(lambda: probe_amqp("127.0.0.1", self.port) and probe_http(self.mgmt_url + "/api/overview"),
                        START_TIMEOUT_SECONDS, abort=lambda: self._proc.poll() is not None)
        if not up:
            raise SetupError(f"private RabbitMQ node {self.node} did not start; last lines:\n{tail(self._log)}")

    def stop(self) -> None:
        if self._proc is None:
            return
        # rabbitmqctl stop shuts the node down cleanly (queues flushed to disk) and waits for it.
        subprocess.run(["rabbitmqctl", "-n", self.node, "stop"], capture_output=True, timeout=STOP_TIMEOUT_SECONDS,
                       check=False)
        stop_processes([self._proc], timeout=STOP_TIMEOUT_SECONDS)
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class PrivateRedis:
    """Redis with AOF (fsync always) on a free port; ``url`` points at DB 0."""

    def __init__(self, workdir: Path):
        if not shutil.which("redis-server"):
            raise SetupError("redis-server is not installed: run ./dev test or apt-get install redis-server")
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._proc = spawn_logged(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.workdir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            self.workdir / "redis.out")
        if not wait_until(lambda: probe_redis(self.url), 20, abort=lambda: self._proc.poll() is not None):
            raise SetupError(f"private Redis did not start; last lines:\n{tail(self.workdir / 'redis.out')}")

    def stop(self) -> None:
        if self._proc is not None:
            stop_processes([self._proc], timeout=STOP_TIMEOUT_SECONDS)  # SIGTERM: Redis fsyncs the AOF and exits
            self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
