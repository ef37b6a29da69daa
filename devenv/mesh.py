"""Process supervisor: every service as its own OS process, ``python -m services.<svc>``.

``Mesh(env, log_dir).start(services=...)`` starts the services in two waves — the consumers
first, so their queues exist before an intake publishes its first ticket — and waits until each
is ready: an HTTP service answers ``GET /healthz``; a service without a port has written its
``service_started`` log line (or, failing that, the management API shows consumers on its
queues). ``stop()`` sends SIGTERM, waits, then SIGKILLs what is left. ``kill(svc)`` and
``restart(svc)`` are for fault tests. Usable as a context manager, by ``./dev up`` and by tests.

``start(services, replicas={"dispatcher": 2})`` runs more than one process of a service (as a
deployment scales it): the first keeps the service's name, port and log; the others are named
``<svc>-<n>`` (their key in ``processes``, their log file, ``TM_REPLICA_ID``) and an HTTP
service's extra replicas get free ports of their own (``urls(svc)`` lists every replica's).
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping
from urllib.parse import quote, unquote, urlsplit

from devenv.config import REPO_ROOT, DevSettings
from devenv.process import signal_group, spawn_logged, stop_processes, tail
from devenv.servers import http_get, port_open

SERVICES = ("intake_email", "intake_chat", "intake_phone", "dispatcher", "sla_watcher", "notifier", "agent_desk")
# Consumers start before the intakes: a topic exchange drops what no queue is bound to yet.
START_WAVES = (("dispatcher", "sla_watcher", "notifier", "agent_desk"), ("intake_email", "intake_chat", "intake_phone"))
HTTP_PORT_VARS = {"agent_desk": "TM_DESK_PORT", "intake_chat": "TM_CHAT_PORT", "intake_phone": "TM_PHONE_PORT",
                  "notifier": "TM_NOTIFIER_PORT", "intake_email": "TM_INTAKE_EMAIL_HEALTH_PORT",
                  "dispatcher": "TM_DISPATCHER_HEALTH_PORT", "sla_watcher": "TM_SLA_WATCHER_HEALTH_PORT"}
HTTP_HOST_VARS = {"agent_desk": "TM_DESK_HOST", "intake_chat": "TM_CHAT_HOST", "intake_phone": "TM_PHONE_HOST",
                  "notifier": "TM_NOTIFIER_HOST", "intake_email": "TM_INTAKE_EMAIL_HEALTH_HOST",
                  "dispatcher": "TM_DISPATCHER_HEALTH_HOST", "sla_watcher": "TM_SLA_WATCHER_HEALTH_HOST"}
DEFAULT_PORTS = {"agent_desk": 8080, "intake_chat": 8081, "intake_phone": 8082, "notifier": 8083, "intake_email": 8084,
                 "dispatcher": 8085, "sla_watcher": 8086}
# nameko's web server answers before its consumers are declared: wait for /readyz there.
READY_PATHS = {"dispatcher": "/readyz", "sla_watcher": "/readyz"}
READY_LOG_MARK = b"service_started"
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0
POLL_SECONDS = 0.1
DEFAULT_MGMT_URL = "http://guest:guest@127.0.0.1:15672"
TEST_CTI_TOKEN = "test-cti-token-0123456789"


def replica_key(service: str, replica: int) -> str:
    """``intake_chat`` for the first replica, ``intake_chat-2`` for the second, …"""
    return service if replica == 1 else f"{service}-{replica}"


def service_of(key: str) -> str:
    base, _, number = key.rpartition("-")
    return base if base and number.isdigit() else key


class MeshError(RuntimeError):
    """A service would not start or become ready; the message carries the tail of its log."""


def mesh_env(settings: DevSettings, **overrides: str) -> dict[str, str]:
    """The environment ``./dev up`` gives every service (tests pass their own values)."""
    data_dir = settings.var_dir / "data"
    env = {
        "TM_AMQP_URI": settings.amqp_uri,
        "TM_REDIS_URL": settings.redis_url,
        "TM_RABBIT_MGMT_URL": settings.rabbit_mgmt_url,
        "TM_LOG_FORMAT": "json",
        "TM_LOG_LEVEL": "INFO",
        "TM_DATA_DIR": str(data_dir),
        "TM_ROSTER_FILE": str(settings.roster_file),
        "TM_CTI_TOKEN": settings.cti_token,
        "TM_DESK_PORT": str(settings.desk_port),
        "TM_CHAT_PORT": str(settings.chat_port),
        "TM_PHONE_PORT": str(settings.phone_port),
        "TM_NOTIFIER_PORT": str(settings.notifier_port),
        "TM_INTAKE_EMAIL_HEALTH_PORT": str(settings.intake_email_health_port),
        "TM_IMAP_HOST": "127.0.0.1",
        "TM_IMAP_PORT": str(settings.imap_port),
        "TM_IMAP_USER": "support",
        "TM_IMAP_PASSWORD": "support-demo",
        "TM_SMTP_HOST": "127.0.0.1",
        "TM_SMTP_PORT": str(settings.smtp_port),
    }
    # Optional files: a service falls back to its own default when the variable is unset.
    for name, path in (("TM_ROUTING_RULES_FILE", settings.routing_rules_file), ("TM_SLA_POLICY_FILE", settings.sla_policy_file)):
        if path.exists():
            env[name] = str(path)
    env.update(overrides)
    return env


def dev_desk_secret(var_dir: Path) -> str:
    """The agent console's cookie key for ./dev up, kept in var/ so sign-ins survive a restart."""
    path = var_dir / "desk-secret"
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))
    return path.read_text().strip()


def isolated_env(*, amqp_uri: str, redis_url: str, work_dir: Path, imap_port: int, smtp_port: int,
                 **overrides: str) -> dict[str, str]:
    """Environment for a mesh inside a test: the test's vhost and Redis DB, free HTTP ports,
    the test's own Dovecot and SMTP sink, files under ``work_dir``."""
    from shared.testing.asyncio_helpers import free_port

    settings = DevSettings.from_env({"TM_VAR_DIR": str(work_dir)})
    env = mesh_env(settings, TM_AMQP_URI=amqp_uri, TM_REDIS_URL=redis_url, TM_IMAP_PORT=str(imap_port),
                   TM_SMTP_PORT=str(smtp_port), TM_CTI_TOKEN=TEST_CTI_TOKEN, TM_DESK_SECRET=secrets.token_hex(16))
    for service, var in HTTP_PORT_VARS.items():
        env[var] = str(free_port())
    env.update(overrides)
    return env


@dataclass
class ServiceProcess:
    name: str
    proc: subprocess.Popen
    log_path: Path
    log_offset: int          # where this run's lines start in the (appended) log file

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None


class Mesh:
    def __init__(self, env: Mapping[str, str], log_dir: Path | str, *, cwd: Path = REPO_ROOT,
                 python: str = sys.executable, ready_timeout: float = READY_TIMEOUT_SECONDS,
                 stop_timeout: float = STOP_TIMEOUT_SECONDS, quiet: bool = True):
        self.env = {**os.environ, **env}
        self.log_dir = Path(log_dir)
        self.cwd = cwd
        self.python = python
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.quiet = quiet
        self.processes: dict[str, ServiceProcess] = {}
        self._replica_env: dict[str, dict[str, str]] = {}   # extra replicas' own ports

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self, services: Iterable[str] = SERVICES, replicas: Mapping[str, int] | None = None) -> "Mesh":
        wanted = list(dict.fromkeys(services))
        replicas = dict(replicas or {})
        unknown = [s for s in wanted if s not in SERVICES]
        if unknown:
            raise ValueError(f"unknown services {unknown}; known: {', '.join(SERVICES)}")
        waves = [[s for s in wave if s in wanted] for wave in START_WAVES]
        for name in wanted:
            if name in HTTP_PORT_VARS and name not in self.processes and self._port_taken(name):
                raise MeshError(f"{name}'s port is in use ({self.url(name)}): is another ./dev up running? "
                                f"Stop it, or set {HTTP_PORT_VARS[name]} to a free port")
        try:
            for wave in waves:
                keys = [replica_key(name, i) for name in wave for i in range(1, replicas.get(name, 1) + 1)]
                for key in keys:
                    if key not in self.processes or not self.processes[key].alive():
                        self._spawn(key)
                self._wait_ready(keys)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, services: Iterable[str] | None = None) -> None:
        """SIGTERM (all at once), wait up to ``stop_timeout``, then SIGKILL the rest."""
        wanted = None if services is None else set(services)
        names = [k for k in self.processes if wanted is None or k in wanted or service_of(k) in wanted]
        stop_processes([self.processes[n].proc for n in names], self.stop_timeout)
        for name in names:
            self._say(f"{name} stopped (exit {self.processes[name].proc.returncode})")
            del self.processes[name]

    def kill(self, service: str) -> None:
        """SIGKILL one service, as a crash would; it stays down until ``restart``."""
        process = self.processes[service]
        signal_group(process.proc, signal.SIGKILL)
        process.proc.wait()

    def restart(self, service: str) -> None:
        if service in self.processes:
            self.stop([service])
        self._spawn(service)
        # Not the management API here: its consumer counts lag by seconds and still show the
        # dead process's consumers, which made a restart look done before the new one was up.
        self._wait_ready([service], use_management=False)

    def __enter__(self) -> "Mesh":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- inspection --------------------------------------------------------------------------------

    def url(self, service: str) -> str:
        """The service's URL, or one replica's (``service`` a ``processes`` key like ``intake_chat-2``)."""
        env = {**self.env, **self._replica_env.get(service, {})}
        base = service_of(service)
        host = env.get(HTTP_HOST_VARS[base], "127.0.0.1")
        port = env.get(HTTP_PORT_VARS[base], str(DEFAULT_PORTS[base]))
        return f"http://{host}:{port}"

    def replicas(self, service: str) -> list[str]:
        """The ``processes`` keys of a service's running replicas (first one first)."""
        return [k for k in self.processes if service_of(k) == service]

    def urls(self, service: str) -> list[str]:
        return [self.url(k) for k in self.replicas(service)]

    def log_path(self, service: str) -> Path:
        return self.log_dir / f"{service}.log"

    def pid(self, service: str) -> int:
        return self.processes[service].pid

    def exited(self) -> dict[str, int]:
        """Services that were started and have exited since, with their exit codes."""
        return {n: p.proc.returncode for n, p in self.processes.items() if not p.alive()}

    # --- internals ---------------------------------------------------------------------------------

    def _port_taken(self, service: str) -> bool:
        parts = urlsplit(self.url(service))
        return port_open(parts.hostname or "127.0.0.1", parts.port or 0, timeout=0.3)

    def _say(self, message: str) -> None:
        if not self.quiet:
            print(f"    {message}", flush=True)

    def _spawn(self, name: str) -> ServiceProcess:
        log_path = self.log_path(name)
        offset = log_path.stat().st_size if log_path.exists() else 0
        service = service_of(name)
        if name != service and service in HTTP_PORT_VARS and name not in self._replica_env:
            from shared.testing.asyncio_helpers import free_port

            self._replica_env[name] = {HTTP_PORT_VARS[service]: str(free_port())}
        default_id = f"{service}-1" if name == service else name
        env = {**self.env, **self._replica_env.get(name, {}),
               "TM_REPLICA_ID": (self.env.get("TM_REPLICA_ID") if name == service else None) or default_id}
        proc = spawn_logged([self.python, "-m", f"services.{service}"], log_path, env=env, cwd=self.cwd)
        process = ServiceProcess(name, proc, log_path, offset)
        self.processes[name] = process
        self._say(f"{name} starting (pid {proc.pid}, log {log_path})")
        return process

    def _wait_ready(self, names: list[str], use_management: bool = True) -> None:
        pending = set(names)
        deadline = time.monotonic() + self.ready_timeout
        while pending:
            for name in sorted(pending):
                process = self.processes[name]
                if not process.alive():
                    raise MeshError(f"{name} exited with code {process.proc.returncode} before it was ready. "
                                    f"Last lines of {process.log_path}:\n{tail(process.log_path)}")
                if self._ready(process, use_management):
                    pending.discard(name)
                    self._say(f"{name} ready")
            if pending and time.monotonic() > deadline:
                details = "\n".join(f"--- {n} ({self.log_path(n)}):\n{tail(self.log_path(n))}" for n in sorted(pending))
                raise MeshError(f"not ready within {self.ready_timeout:.0f} s: {', '.join(sorted(pending))}\n{details}")
            if pending:
                time.sleep(POLL_SECONDS)

    def _ready(self, process: ServiceProcess, use_management: bool = True) -> bool:
        service = service_of(process.name)
        if service in HTTP_PORT_VARS:
            path = READY_PATHS.get(service, "/healthz")
            return http_get(f"{self.url(process.name)}{path}", timeout=1.0) is not None
        # Replicas share the queues: the n-th counts as consuming once a queue has n consumers.
        return self._logged_started(process) or (
            use_management and self._queues_consumed(service, len(self.replicas(service))))

    def _logged_started(self, process: ServiceProcess) -> bool:
        try:
            with open(process.log_path, "rb") as handle:
                handle.seek(process.log_offset)
                return READY_LOG_MARK in handle.read()
        except OSError:
            return False

    def _queues_consumed(self, service: str, replicas: int = 1) -> bool:
        """True when the service's handler queues (``evt-…--<svc>.<handler>``) all have consumers."""
        mgmt = self.env.get("TM_RABBIT_MGMT_URL", DEFAULT_MGMT_URL).rstrip("/")
        vhost = unquote(urlsplit(self.env.get("TM_AMQP_URI", "")).path.lstrip("/")) or "/"
        raw = http_get(f"{mgmt}/api/queues/{quote(vhost, safe='')}?columns=name,consumers", timeout=1.0)
        if raw is None:
            return False
        queues = [q for q in json.loads(raw) if f"--{service}." in q.get("name", "")]
        return (bool(queues) and all(q.get("consumers", 0) > 0 for q in queues)
                and max(q.get("consumers", 0) for q in queues) >= replicas)
