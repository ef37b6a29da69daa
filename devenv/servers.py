"""The servers the mesh and its tests need, each reused when reachable and started otherwise.

Order: Debian packages, Redis, RabbitMQ (with its management plugin), then for ``up`` a private
Dovecot and the SMTP sink, for ``test`` Chromium and Playwright. A server that already answers
is used as it is and never stopped; only what :class:`ServerSet` started is stopped on exit.
A server that cannot be had is a :class:`SetupError` whose message says what to do.
"""
from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence
from urllib.parse import urlsplit

from devenv.config import DevSettings
from devenv.process import spawn_logged, stop_processes, tail

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
REDIS_START_TIMEOUT = 20.0
RABBIT_START_TIMEOUT = 90.0
RABBIT_MGMT_TIMEOUT = 60.0
DOVECOT_START_TIMEOUT = 20.0
SINK_START_TIMEOUT = 20.0
RABBIT_LOG_DIR = Path("/var/log/rabbitmq")
RABBIT_ENV_CONF = Path("/etc/rabbitmq/rabbitmq-env.conf")
EPMD_PORT = 4369


class SetupError(RuntimeError):
    """A server or package is missing and we cannot provide it; the message says what to do."""


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


# --- probes: each answers quickly with True/False and never raises -----------------------------

def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _exchange(host: str, port: int, send: bytes | None, timeout: float) -> bytes:
    """Connect, optionally send ``send``, return the first bytes the server answers (b"" if none)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            if send:
                sock.sendall(send)
            return sock.recv(512)
    except OSError:
        return b""


def probe_redis(url: str, timeout: float = 1.0) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.exceptions.RedisError, OSError):
        return False
    finally:
        client.close()


def probe_amqp(host: str, port: int, timeout: float = 1.0) -> bool:
    # An AMQP 0-9-1 broker answers the protocol header with a method frame (type 1),
    # Connection.Start; no credentials are needed to see it.
    return _exchange(host, port, b"AMQP\x00\x00\x09\x01", timeout)[:1] == b"\x01"


def probe_imap(host: str, port: int, timeout: float = 1.0) -> bool:
    return _exchange(host, port, None, timeout).startswith(b"* OK")


def probe_smtp(host: str, port: int, timeout: float = 1.0) -> bool:
    return _exchange(host, port, None, timeout).startswith(b"220")


def probe_http(url: str, timeout: float = 1.0) -> bool:
    """True when ``url`` answers 2xx; credentials in the URL are sent as basic auth."""
    return http_get(url, timeout) is not None


def http_get(url: str, timeout: float = 2.0) -> bytes | None:
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    request = urllib.request.Request(parts._replace(netloc=netloc).geturl())
    if parts.username:
        token = base64.b64encode(f"{parts.username}:{parts.password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read() if 200 <= response.status < 300 else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def epmd_has_node(short_name: str, timeout: float = 0.5) -> bool:
    """True when an Erlang node of that name is registered (running or still booting)."""
    reply = _exchange("127.0.0.1", EPMD_PORT, b"\x00\x01n", timeout)
    return f"name {short_name} at port".encode() in reply


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.2,
               abort: Callable[[], bool] | None = None) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` passes or ``abort`` holds (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline or (abort is not None and abort()):
            return False
        time.sleep(interval)


def host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


# --- Debian packages ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Package:
    name: str                     # the Debian package
    what: str                     # what a person calls it
    paths: tuple[str, ...]        # installed when all of these exist (a bare name: a command on PATH)

    def installed(self) -> bool:
        return all(Path(p).exists() if "/" in p else shutil.which(p) is not None for p in self.paths)


REDIS_PKG = Package("redis-server", "Redis", ("/usr/bin/redis-server",))
RABBIT_PKG = Package("rabbitmq-server", "RabbitMQ", ("/usr/sbin/rabbitmq-server", "/usr/sbin/rabbitmq-plugins"))
DOVECOT_PKG = Package("dovecot-imapd", "Dovecot IMAP server", ("/usr/sbin/dovecot", "/usr/lib/dovecot/imap"))
CHROMIUM_PKG = Package("chromium", "Chromium", ("/usr/bin/chromium",))
# tests/deploy checks the KEDA resources with a validator installed by npm (deploy/validate).
NODE_PKG = Package("nodejs", "Node.js", ("node",))
NPM_PKG = Package("npm", "npm", ("npm",))
CJK_FONTS_PKG = Package("fonts-noto-cjk", "Chinese fonts (Noto CJK)", ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",))


def can_use_apt() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def missing_message(packages: Sequence[Package]) -> str:
    what = ", ".join(p.what for p in packages)
    names = " ".join(p.name for p in packages)
    return f"install {what} (Debian: apt-get install {names})"


def install_packages(packages: Sequence[Package], *, apt_allowed: Callable[[], bool] = can_use_apt,
                     run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> None:
    """Install the packages that are missing with apt-get, or fail saying how to install them."""
    missing = [p for p in packages if not p.installed()]
    if not missing:
        return
    if not apt_allowed():
        raise SetupError(missing_message(missing) + " — this needs root and apt-get, so do it yourself and run again")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    say(f"installing Debian packages: {' '.join(p.name for p in missing)} (apt-get, a few minutes the first time)")
    for cmd in (["apt-get", "update"],
                ["apt-get", "install", "-y", "--no-install-recommends", *(p.name for p in missing)]):
        result = run(cmd, env=env)
        if result.returncode != 0:
            raise SetupError(f"`{' '.join(cmd)}` failed (exit {result.returncode}); " + missing_message(missing))
    still = [p for p in missing if not p.installed()]
    if still:
        raise SetupError("apt-get finished but these are still missing: " + missing_message(still))


# --- servers ----------------------------------------------------------------------------------------

@dataclass
class Owned:
    """Something we started, and how to stop it."""

    name: str
    stop: Callable[[], None]


@dataclass
class Server:
    name: str
    where: str
    probe: Callable[[], bool]
    start: Callable[[], Owned | None]      # None: it came up, but is not ours to stop
    reuse_note: str = "already running; using it"


@dataclass
class ServerSet:
    """The servers ensured so far; stops (in reverse order) only those it started."""

    owned: list[Owned] = field(default_factory=list)

    def ensure(self, server: Server) -> None:
        if server.probe():
            say(f"{server.name}: {server.reuse_note} ({server.where})")
            return
        say(f"{server.name}: not reachable at {server.where}; starting it")
        owned = server.start()
        if owned is not None:
            self.owned.append(owned)
        if not server.probe():
            raise SetupError(f"{server.name} was started but does not answer at {server.where}")
        say(f"{server.name}: ready ({server.where})")

    def stop_all(self) -> None:
        while self.owned:
            owned = self.owned.pop()
            say(f"stopping {owned.name} (we started it)")
            try:
                owned.stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                print(f"    could not stop {owned.name}: {exc}", file=sys.stderr)

    def __enter__(self) -> "ServerSet":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def _require_local(name: str, host: str, where: str) -> None:
    if host not in LOCAL_HOSTS:
        raise SetupError(f"{name} at {where} is not reachable, and it is not on this machine, so we cannot start it")


def owned_process(name: str, proc: subprocess.Popen) -> Owned:
    return Owned(name, lambda: stop_processes([proc]))


def redis_server(settings: DevSettings) -> Server:
    host, port = host_port(settings.redis_url, 6379)
    where = f"{host}:{port}"

    def start() -> Owned:
        _require_local("Redis", host, where)
        data_dir = settings.var_dir / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        log_path = settings.log_dir / "redis.log"
        # Dev and test data is disposable: no snapshots, no append-only file.
        proc = spawn_logged(["redis-server", "--bind", host, "--port", str(port), "--save", "",
                             "--appendonly", "no", "--dir", str(data_dir), "--daemonize", "no"], log_path)
        if not wait_until(lambda: probe_redis(settings.redis_url), REDIS_START_TIMEOUT, abort=lambda: proc.poll() is not None):
            stop_processes([proc])
            raise SetupError(f"redis-server did not answer PING on {where}. Last lines of {log_path}:\n{tail(log_path)}")
        return owned_process("Redis", proc)

    return Server("Redis", where, lambda: probe_redis(settings.redis_url), start)


def rabbit_env() -> dict[str, str]:
    """Environment for rabbitmq-* commands.

    Debian names the node ``rabbit@<short hostname>``; where that name does not resolve (some
    containers) the node cannot start, so we fall back to ``rabbit@localhost``, unless the
    node name is configured already.
    """
    env = dict(os.environ)
    if "RABBITMQ_NODENAME" in env:
        return env
    try:
        if any(line.strip().startswith("NODENAME=") for line in RABBIT_ENV_CONF.read_text().splitlines()):
            return env
    except OSError:
        pass
    try:
        socket.gethostbyname(socket.gethostname().split(".")[0])
    except OSError:
        env["RABBITMQ_NODENAME"] = "rabbit@localhost"
    return env


def rabbit_log_tail(lines: int = 30) -> str:
    try:
        logs = sorted(RABBIT_LOG_DIR.glob("*.log"), key=lambda p: p.stat().st_mtime)
    except OSError:
        logs = []
    logs = [p for p in logs if "upgrade" not in p.name] or logs
    if not logs:
        return f"(no log in {RABBIT_LOG_DIR})"
    parts = [f"--- {logs[-1]}", tail(logs[-1], lines)]
    startup_err = RABBIT_LOG_DIR / "startup_err"
    if startup_err.exists() and startup_err.stat().st_size:
        parts += [f"--- {startup_err}", tail(startup_err, 10)]
    return "\n".join(parts)


def _run_quiet(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(cmd, 124, exc.stdout or "", f"timed out after {timeout}s")


def rabbitmq_server(settings: DevSettings) -> Server:
    host, port = host_port(settings.amqp_uri, 5672)
    where = f"{host}:{port}"

    def wait_for_node() -> None:
        if not wait_until(lambda: probe_amqp(host, port), RABBIT_START_TIMEOUT, interval=0.5):
            raise SetupError(f"RabbitMQ did not answer AMQP on {where} within {RABBIT_START_TIMEOUT:.0f} s. "
                             f"Last lines of its log:\n{rabbit_log_tail()}")

    def start() -> Owned | None:
        _require_local("RabbitMQ", host, where)
        env = rabbit_env()
        if epmd_has_node("rabbit"):
            # The Debian postinst (or a service manager) started a node that is still booting.
            say("RabbitMQ: a node is already booting (not ours); waiting for it")
            wait_for_node()
            return None
        # Enabled before boot, the management API comes up with the node.
        _run_quiet(["rabbitmq-plugins", "--offline", "enable", "rabbitmq_management"], env, 60)
        result = _run_quiet(["rabbitmq-server", "-detached"], env, 60)
        output = f"{result.stdout}\n{result.stderr}".strip()
        already = "already running" in output.lower()
        if result.returncode != 0 and not already:
            raise SetupError(f"`rabbitmq-server -detached` failed (exit {result.returncode}):\n{output}\n{rabbit_log_tail()}")
        if already:
            say("RabbitMQ: a node is already running (not ours); waiting for it")
            wait_for_node()
            return None
        try:
            wait_for_node()
        except SetupError:
            # Ours, and it did not come up: stop it rather than leave a half-started node behind.
            try:
                _stop_rabbitmq(env)
            except RuntimeError:
                pass
            raise
        return Owned("RabbitMQ", lambda: _stop_rabbitmq(env))

    return Server("RabbitMQ", where, lambda: probe_amqp(host, port), start)


def _stop_rabbitmq(env: dict[str, str]) -> None:
    result = _run_quiet(["rabbitmqctl", "stop"], env, 60)
    if result.returncode != 0:
        raise RuntimeError(f"rabbitmqctl stop failed: {result.stderr.strip() or result.stdout.strip()}")


def rabbit_management(settings: DevSettings) -> Server:
    overview = settings.rabbit_mgmt_url.rstrip("/") + "/api/overview"
    host, port = host_port(settings.rabbit_mgmt_url, 15672)
    where = f"http://{host}:{port}/"

    def start() -> None:
        if shutil.which("rabbitmq-plugins") is None:
            raise SetupError(f"the RabbitMQ management API does not answer at {where}: enable it on the broker "
                             "(rabbitmq-plugins enable rabbitmq_management)")
        say("RabbitMQ management: enabling the rabbitmq_management plugin")
        result = _run_quiet(["rabbitmq-plugins", "enable", "rabbitmq_management"], rabbit_env(), 120)
        if result.returncode != 0:
            raise SetupError("`rabbitmq-plugins enable rabbitmq_management` failed:\n"
                             f"{result.stdout}\n{result.stderr}".strip())
        if not wait_until(lambda: probe_http(overview), RABBIT_MGMT_TIMEOUT, interval=0.5):
            raise SetupError(f"the RabbitMQ management API did not answer at {where} within {RABBIT_MGMT_TIMEOUT:.0f} s "
                             f"(tests use it to create a vhost per test). Last lines of the log:\n{rabbit_log_tail()}")
        return None  # the plugin stays enabled; nothing to stop

    return Server("RabbitMQ management", where, lambda: probe_http(overview), start)


def dovecot_workdir(var_dir: Path, fallback: Path = Path("/var/tmp/ticketmesh-dovecot")) -> Path:
    """``var/dovecot``, unless the mail user could not reach it.

    As root, Dovecot stores mail as the ``mail`` user, which must be able to pass through every
    parent folder; a checkout under /root (mode 700) does not allow that.
    """
    preferred = var_dir / "dovecot"
    if os.geteuid() != 0:
        return preferred
    var_dir.mkdir(parents=True, exist_ok=True)
    for folder in (var_dir.resolve(), *var_dir.resolve().parents):
        if not folder.stat().st_mode & 0o001:
            say(f"Dovecot: {folder} is private (mode {folder.stat().st_mode & 0o777:o}), so its mail lives in {fallback}")
            return fallback
    return preferred


def dovecot_server(settings: DevSettings) -> Server:
    host, port = "127.0.0.1", settings.imap_port
    where = f"imap://{host}:{port} (user support / support-demo)"

    def start() -> Owned:
        from devenv.dovecot import DovecotServer

        dovecot = DovecotServer(dovecot_workdir(settings.var_dir), port=port)
        try:
            dovecot.start()
        except Exception as exc:  # noqa: BLE001 - its own message says what went wrong
            raise SetupError(f"Dovecot could not start on {host}:{port}: {exc}") from None
        if not wait_until(lambda: probe_imap(host, port), DOVECOT_START_TIMEOUT):
            dovecot.stop()
            raise SetupError(f"Dovecot did not answer IMAP on {host}:{port}; see {dovecot.log_path}")
        return Owned("Dovecot", dovecot.stop)

    return Server("Dovecot", where, lambda: probe_imap(host, port), start)


def smtp_sink(settings: DevSettings) -> Server:
    host, port = "127.0.0.1", settings.smtp_port
    where = f"smtp://{host}:{port}, web http://{host}:{settings.sink_web_port}/"

    def start() -> Owned:
        log_path = settings.log_dir / "smtp_sink.log"
        proc = spawn_logged([sys.executable, "-m", "devenv.smtp_sink", "--dir", str(settings.var_dir / "outbox"),
                             "--smtp-port", str(port), "--web-port", str(settings.sink_web_port)],
                            log_path, cwd=settings.repo_root)
        if not wait_until(lambda: probe_smtp(host, port), SINK_START_TIMEOUT, abort=lambda: proc.poll() is not None):
            stop_processes([proc])
            raise SetupError(f"the SMTP sink did not answer on {host}:{port}. Last lines of {log_path}:\n{tail(log_path)}")
        return owned_process("SMTP sink", proc)

    return Server("SMTP sink", where, lambda: probe_smtp(host, port), start)


def check_browser() -> str:
    """Chromium and Playwright for the end-to-end tests; returns Chromium's version."""
    if not CHROMIUM_PKG.installed():
        raise SetupError(missing_message([CHROMIUM_PKG]))
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        raise SetupError(f"Playwright's Python package does not import ({exc}); "
                         "remove .venv/.tm-install-stamp and run ./dev test again to reinstall") from None
    result = _run_quiet([CHROMIUM_PKG.paths[0], "--version"], dict(os.environ), 30)
    version = result.stdout.strip()
    if result.returncode != 0 or not version:
        raise SetupError(f"{CHROMIUM_PKG.paths[0]} --version failed: {result.stderr.strip()}")
    return version


# --- what `up` and `test` need --------------------------------------------------------------------

def packages_for(settings: DevSettings, *, for_tests: bool) -> list[Package]:
    """Packages needed now: a server that already answers needs no local binary."""
    wanted: list[Package] = []
    if not probe_redis(settings.redis_url):
        wanted.append(REDIS_PKG)
    amqp_host, amqp_port = host_port(settings.amqp_uri, 5672)
    if not probe_amqp(amqp_host, amqp_port):
        wanted.append(RABBIT_PKG)
    if for_tests or not probe_imap("127.0.0.1", settings.imap_port):
        wanted.append(DOVECOT_PKG)  # service tests run a private Dovecot of their own
    if for_tests:
        wanted += [CHROMIUM_PKG, CJK_FONTS_PKG, NODE_PKG, NPM_PKG]
    return wanted


def ensure_for_up(settings: DevSettings, servers: ServerSet) -> None:
    install_packages(packages_for(settings, for_tests=False))
    for server in (redis_server(settings), rabbitmq_server(settings), rabbit_management(settings),
                   dovecot_server(settings), smtp_sink(settings)):
        servers.ensure(server)


def ensure_for_tests(settings: DevSettings, servers: ServerSet) -> None:
    install_packages(packages_for(settings, for_tests=True))
    for server in (redis_server(settings), rabbitmq_server(settings), rabbit_management(settings)):
        servers.ensure(server)
    say(f"Chromium: {check_browser()}; Playwright imports")

