"""A private Dovecot IMAP server for tests and the demo, owned by the process that starts it.

Debian's ``dovecot-imapd`` is enough: :class:`DovecotServer` writes its own ``dovecot.conf``
into a work folder (sockets, state, log and maildirs all live there), listens on 127.0.0.1 only,
and runs ``dovecot -F`` as a child process so its lifetime is the caller's. Loopback only, so
plaintext logins without TLS are allowed; passwords are ``{PLAIN}`` entries of a passwd-file.

Mail is stored as the ``mail`` system user when we run as root (Dovecot refuses uid 0 for
mail access), or as the current user otherwise. The work folder must be reachable by that
user: prefer a folder under /tmp or the project's ``var/``, not pytest's private tmp_path.

    python -m devenv.dovecot --workdir var/dovecot --port 1143

runs it in the foreground for the demo (Ctrl-C stops it).

XOAUTH2: given ``oauth2_introspection_url``, Dovecot also accepts ``AUTHENTICATE XOAUTH2`` (and
OAUTHBEARER) and checks each bearer token by POSTing it to that URL (RFC 7662 introspection),
as it would against an identity provider. :class:`TokenIntrospection` is a tiny stand-in for
one: it answers ``{"active": true, "username": ...}`` for the tokens it was given, and
``{"active": false}`` for anything else.
"""
from __future__ import annotations

import argparse
import grp
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

DEFAULT_USERS = {"support": "support-demo"}
START_TIMEOUT_SECONDS = 15.0
STOP_TIMEOUT_SECONDS = 10.0
HOW_TO_INSTALL = "run ./dev test (which installs it) or apt-get install dovecot-imapd"
_APPENDUID = re.compile(rb"APPENDUID (\d+) (\d+)")
_LOG_TAIL_CHARS = 4000


def find_dovecot() -> str:
    found = shutil.which("dovecot") or next(
        (p for p in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot") if os.access(p, os.X_OK)), None)
    if found is None:
        raise RuntimeError(f"the dovecot binary was not found; {HOW_TO_INSTALL}")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _dovecot_version(binary: str) -> tuple[int, int]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    match = re.match(r"(\d+)\.(\d+)", out.strip())
    return (int(match.group(1)), int(match.group(2))) if match else (2, 3)


class DovecotServer:
    """One Dovecot instance in ``workdir``; ``start()``/``stop()`` or use it as a context manager."""

    host = "127.0.0.1"

    def __init__(self, workdir: Path | str, port: int | None = None, users: dict[str, str] | None = None,
                 oauth2_introspection_url: str | None = None):
        self.workdir = Path(workdir).resolve()
        self.port = port or free_port()
        self.users = dict(users or DEFAULT_USERS)
        self.oauth2_introspection_url = oauth2_introspection_url
        self._proc: subprocess.Popen | None = None
        self.config_path = self.workdir / "dovecot.conf"
        self.log_path = self.workdir / "dovecot.log"
        self._stderr_path = self.workdir / "dovecot.stderr"

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> "DovecotServer":
        binary = find_dovecot()
        if self._proc is not None and self._proc.poll() is None:
            return self
        self._write_config(binary)
        with open(self._stderr_path, "ab") as stderr:
            self._proc = subprocess.Popen([binary, "-F", "-c", str(self.config_path)], stdin=subprocess.DEVNULL,
                                          stdout=stderr, stderr=stderr, start_new_session=True)
        try:
            self._wait_for_greeting()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: only dovecot and its children
            proc.wait(STOP_TIMEOUT_SECONDS)

    def restart(self) -> "DovecotServer":
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> "DovecotServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- mail ----------------------------------------------------------------------------------

    @contextmanager
    def client(self, user: str) -> Iterator["imapclient.IMAPClient"]:  # noqa: F821
        """A logged-in IMAPClient for ``user`` (closed on exit)."""
        import imapclient

        conn = imapclient.IMAPClient(self.host, port=self.port, ssl=False, timeout=10)
        try:
            conn.login(user, self.users[user])
            yield conn
        finally:
            try:
                conn.logout()
            except Exception:  # noqa: BLE001 - best effort on a connection we are dropping anyway
                conn.shutdown()

    def append(self, user: str, raw: bytes, folder: str = "INBOX", flags: tuple[str, ...] = ()) -> int | None:
        """Deliver ``raw`` into ``user``'s ``folder`` over IMAP APPEND; return its UID (UIDPLUS)."""
        with self.client(user) as conn:
            if not conn.folder_exists(folder):
                conn.create_folder(folder)
            response = conn.append(folder, raw, flags=flags)
        match = _APPENDUID.search(response if isinstance(response, bytes) else str(response).encode())
        return int(match.group(2)) if match else None

    # -- internals -----------------------------------------------------------------------------

    def _mail_account(self) -> pwd.struct_passwd:
        # Dovecot refuses uid 0 for mail access; as root, store mail as the `mail` system user.
        return pwd.getpwnam("mail") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())

    def _write_config(self, binary: str) -> None:
        account = self._mail_account()
        unprivileged = os.geteuid() != 0
        for sub in ("run", "state"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        mail_root = self.workdir / "mail"
        mail_root.mkdir(parents=True, exist_ok=True)
        if not unprivileged:
            os.chmod(self.workdir, 0o755)
            os.chown(mail_root, account.pw_uid, account.pw_gid)
            self._check_reachable(mail_root, account)
        passwd = self.workdir / "passwd"
        passwd.write_text("".join(f"{user}:{{PLAIN}}{password}::::::\n" for user, password in self.users.items()))
        os.chmod(passwd, 0o644)

        major, minor = _dovecot_version(binary)
        cleartext = "auth_allow_cleartext = yes" if (major, minor) >= (2, 4) else "disable_plaintext_auth = no"
        mechanisms = "plain login"
        oauth2_passdb = ""
        if self.oauth2_introspection_url:
            mechanisms += " xoauth2 oauthbearer"
            oauth2_conf = self.workdir / "dovecot-oauth2.conf.ext"
            oauth2_conf.write_text(
                "# Bearer tokens are checked by RFC 7662 introspection (devenv.dovecot.TokenIntrospection).\n"
                f"introspection_mode = post\nintrospection_url = {self.oauth2_introspection_url}\n"
                "username_attribute = username\nactive_attribute = active\nactive_value = true\n")
            os.chmod(oauth2_conf, 0o644)
            oauth2_passdb = f"""passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {oauth2_conf}
}}
"""
        # Unprivileged runs cannot chroot or switch users: every process runs as us.
        group = grp.getgrgid(account.pw_gid).gr_name
        unprivileged_lines = (
            f"default_login_user = {account.pw_name}\ndefault_internal_user = {account.pw_name}\n"
            f"default_internal_group = {group}\n" if unprivileged else ""
        )
        no_chroot = "  chroot =\n" if unprivileged else ""
        self.config_path.write_text(f"""# Written by devenv/dovecot.py: a private loopback IMAP server for tests and the demo.
base_dir = {self.workdir / 'run'}
state_dir = {self.workdir / 'state'}
log_path = {self.log_path}
instance_name = tm-dovecot-{self.port}
protocols = imap
listen = 127.0.0.1
ssl = no
{cleartext}
auth_mechanisms = {mechanisms}
# Loopback test/demo server: answer a wrong password quickly (no failure delay here, and no
# growing per-IP penalty: the anvil-auth-penalty listener is off below), so retries are cheap.
auth_failure_delay = 0
mail_location = maildir:{mail_root}/%u
first_valid_uid = {account.pw_uid}
last_valid_uid = {account.pw_uid}
first_valid_gid = {account.pw_gid}
last_valid_gid = {account.pw_gid}
{unprivileged_lines}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
{oauth2_passdb}userdb {{
  driver = static
  args = uid={account.pw_uid} gid={account.pw_gid} home={mail_root}/%u
}}
service anvil {{
{no_chroot}  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
{no_chroot}  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
""")

    def _check_reachable(self, path: Path, account: pwd.struct_passwd) -> None:
        # The mail processes run as `account`: every parent folder must let others pass through.
        for parent in path.parents:
            mode = parent.stat().st_mode
            if parent.stat().st_uid != account.pw_uid and not mode & 0o001:
                raise RuntimeError(
                    f"dovecot's mail user {account.pw_name!r} cannot reach {path}: {parent} is not searchable "
                    "by others; use a work folder under /tmp (tempfile.mkdtemp) or the project's var/")

    def _wait_for_greeting(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise RuntimeError(f"dovecot exited with status {code} while starting\n{self._logs()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as sock:
                    sock.settimeout(2)
                    greeting = sock.recv(512)
                if greeting.startswith(b"* OK"):
                    return
                last_error = RuntimeError(f"unexpected greeting {greeting[:80]!r}")
            except OSError as exc:
                last_error = exc
            time.sleep(0.05)
        raise RuntimeError(f"dovecot did not answer on {self.host}:{self.port} within {START_TIMEOUT_SECONDS}s "
                           f"({last_error})\n{self._logs()}")

    def _logs(self) -> str:
        parts = []
        for path in (self._stderr_path, self.log_path):
            if path.exists():
                text = path.read_text(errors="replace")[-_LOG_TAIL_CHARS:]
                parts.append(f"--- {path} ---\n{text}")
        return "\n".join(parts) or "(dovecot wrote no log)"


class TokenIntrospection:
    """A stand-in identity provider's token introspection endpoint (RFC 7662) on 127.0.0.1.

    ``tokens`` maps each valid bearer token to its username; it may be changed while running
    (a revoked token is one removed from it). ``requests`` counts the checks it answered.
    """

    def __init__(self, tokens: dict[str, str] | None = None):
        self.tokens = dict(tokens or {})
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
                token = (form.get("token") or [""])[0]
                owner.requests += 1
                user = owner.tokens.get(token)
                body = json.dumps({"active": True, "username": user} if user else {"active": False}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:  # quiet: tokens must not reach any log
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/introspect"

    def start(self) -> "TokenIntrospection":
        self._thread = threading.Thread(target=self._server.serve_forever, name="token-introspection", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "TokenIntrospection":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a private Dovecot IMAP server in the foreground.")
    parser.add_argument("--workdir", default="var/dovecot", help="folder for config, state, log and maildirs")
    parser.add_argument("--port", type=int, default=1143)
    parser.add_argument("--user", action="append", default=[], metavar="NAME:PASSWORD",
                        help="mail account (repeatable); default support:support-demo")
    args = parser.parse_args(argv)
    users = dict(u.split(":", 1) for u in args.user) or DEFAULT_USERS
    server = DovecotServer(Path(args.workdir), port=args.port, users=users)
    stopping = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with server:
        print(f"dovecot IMAP on {server.host}:{server.port} users={sorted(users)} log={server.log_path}", flush=True)
        while not stopping and server.running:
            time.sleep(0.5)
    if not stopping:
        raise SystemExit(f"dovecot exited unexpectedly; see {server.log_path}")


if __name__ == "__main__":
    main()
