"""Server bootstrap logic of ./dev: probes answer fast, packages are installed or named,
and only what we started is stopped."""
import socket
import subprocess
import threading
import time

import pytest

from devenv.servers import (Owned, Package, Server, ServerSet, SetupError, install_packages, missing_message,
                            port_open, probe_amqp, probe_imap, probe_redis, probe_smtp, wait_until)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_server():
    """A TCP server that accepts and never says a word (a hung or wrong service)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    accepted = []
    stop = threading.Event()

    def accept_loop():
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(sock.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    sock.close()


def test_probes_of_a_closed_port_return_false_fast():
    port = closed_port()
    started = time.monotonic()
    assert port_open("127.0.0.1", port) is False
    assert probe_amqp("127.0.0.1", port) is False
    assert probe_imap("127.0.0.1", port) is False
    assert probe_smtp("127.0.0.1", port) is False
    assert probe_redis(f"redis://127.0.0.1:{port}/0") is False
    assert time.monotonic() - started < 1.0


def test_a_port_that_accepts_but_never_speaks_is_not_the_server(silent_server):
    assert port_open("127.0.0.1", silent_server) is True
    started = time.monotonic()
    assert probe_amqp("127.0.0.1", silent_server, timeout=0.3) is False
    assert probe_imap("127.0.0.1", silent_server, timeout=0.3) is False
    assert time.monotonic() - started < 1.5


def test_wait_until_stops_early_on_abort_and_returns_true_when_condition_holds():
    started = time.monotonic()
    assert wait_until(lambda: False, timeout=10, interval=0.01, abort=lambda: True) is False
    assert time.monotonic() - started < 1.0
    calls = iter([False, False, True])
    assert wait_until(lambda: next(calls), timeout=5, interval=0.01) is True


def absent(name: str) -> Package:
    return Package(name, name.title(), (f"/nonexistent/{name}",))


def test_missing_packages_without_root_fail_with_the_apt_command():
    with pytest.raises(SetupError) as err:
        install_packages([absent("redis-server"), Package("bash", "Bash", ("/bin/sh",))], apt_allowed=lambda: False)
    assert "apt-get install redis-server" in str(err.value)
    assert "bash" not in str(err.value).split("apt-get install")[1]
    assert missing_message([absent("a"), absent("b")]) == "install A, B (Debian: apt-get install a b)"


def test_missing_packages_as_root_run_apt_update_once_then_install_noninteractively():
    calls = []

    def fake_run(cmd, env):
        calls.append((cmd, env["DEBIAN_FRONTEND"]))
        return subprocess.CompletedProcess(cmd, 0)

    with pytest.raises(SetupError, match="still missing"):  # the fake apt installs nothing
        install_packages([absent("dovecot-imapd"), absent("chromium")], apt_allowed=lambda: True, run=fake_run)
    assert calls == [(["apt-get", "update"], "noninteractive"),
                     (["apt-get", "install", "-y", "--no-install-recommends", "dovecot-imapd", "chromium"], "noninteractive")]


def test_failing_apt_is_an_error_naming_the_packages():
    def failing_run(cmd, env):
        return subprocess.CompletedProcess(cmd, 100)

    with pytest.raises(SetupError, match="apt-get update.*apt-get install fonts-noto-cjk"):
        install_packages([absent("fonts-noto-cjk")], apt_allowed=lambda: True, run=failing_run)


def test_installed_packages_need_no_apt():
    install_packages([Package("sh", "Shell", ("/bin/sh",))], apt_allowed=lambda: pytest.fail("apt not needed"))


def test_server_set_reuses_running_servers_and_stops_only_what_it_started_in_reverse_order():
    stopped = []
    state = {"redis": True, "rabbit": False, "sink": False}

    def starter(name, owned=True):
        def start():
            state[name] = True
            return Owned(name, lambda: stopped.append(name)) if owned else None
        return start

    with ServerSet() as servers:
        servers.ensure(Server("redis", "here", lambda: state["redis"], lambda: pytest.fail("must not start")))
        servers.ensure(Server("rabbit", "here", lambda: state["rabbit"], starter("rabbit", owned=False)))
        servers.ensure(Server("sink", "here", lambda: state["sink"], starter("sink")))
        servers.ensure(Server("dovecot", "here", lambda: True, lambda: None))
        assert [o.name for o in servers.owned] == ["sink"]
    assert stopped == ["sink"]


def test_a_server_that_starts_but_never_answers_is_an_error():
    with ServerSet() as servers, pytest.raises(SetupError, match="does not answer"):
        servers.ensure(Server("ghost", "nowhere", lambda: False, lambda: None))


def test_dovecot_mail_moves_out_of_a_private_checkout(tmp_path):
    import os

    from devenv.servers import dovecot_workdir

    private = tmp_path / "home"
    (private / "repo").mkdir(parents=True)
    private.chmod(0o700)
    fallback = tmp_path / "fallback"
    chosen = dovecot_workdir(private / "repo" / "var", fallback)
    if os.geteuid() == 0:
        assert chosen == fallback
    else:  # unprivileged Dovecot runs as us: any folder of ours works
        assert chosen == private / "repo" / "var" / "dovecot"


def test_tests_need_node_and_npm_for_the_deploy_validator(monkeypatch):
    """tests/deploy runs the KEDA validator with node; a machine without it gets it from Debian
    like Chromium, rather than a failed test."""
    from devenv import servers
    from devenv.config import DevSettings

    monkeypatch.setattr(servers, "probe_redis", lambda url: True)
    monkeypatch.setattr(servers, "probe_amqp", lambda host, port: True)
    settings = DevSettings.from_env({})
    names = {p.name for p in servers.packages_for(settings, for_tests=True)}
    assert {"nodejs", "npm"} <= names
    assert servers.Package("x", "x", ("sh",)).installed() and not servers.Package("x", "x", ("no-such-cmd-tm",)).installed()
