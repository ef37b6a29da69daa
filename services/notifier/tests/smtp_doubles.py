"""Real SMTP servers (aiosmtpd) that misbehave on cue, a TLS certificate authority, and a TCP
proxy that freezes a connection at a chosen byte, for the notifier's delivery tests.

``ScriptedSmtp`` accepts mail like a real relay: it *commits* a message (appends it to
``deliveries``) when the whole message has arrived, before it answers 250, as an MTA that
writes its queue file first does. What it answers can be scripted per recipient
(``rcpt_replies``), and it can stall on the greeting or before answering DATA.

``HoldProxy`` forwards bytes between the notifier and a server until it sees a pattern in one
direction; then it forwards the part before the pattern (or the whole chunk) and freezes every
connection. The test kills the notifier while it waits on the frozen link, then ``release()``
closes the server side (the server sees the client vanish).
"""
from __future__ import annotations

import asyncio
import email
import email.policy
import threading
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass(frozen=True)
class Delivery:
    message_id: str
    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    tls: bool
    user: str | None

    @property
    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.raw, policy=email.policy.default)  # type: ignore[return-value]


@dataclass
class ScriptedSmtp:
    """aiosmtpd on 127.0.0.1:``port`` (``tls_context``: STARTTLS offered; ``implicit_tls``: TLS
    from the first byte; ``users``: AUTH required with these logins)."""

    port: int
    tls_context: Any = None
    implicit_tls: bool = False
    users: dict[str, str] | None = None
    rcpt_replies: dict[str, list[str]] = field(default_factory=dict)   # address → replies, one per RCPT; then 250
    always_refuse: dict[str, str] = field(default_factory=dict)         # address → reply to every RCPT
    stall_greetings: int = 0            # this many EHLOs wait for ``stall_seconds`` first
    stall_data_answers: int = 0         # this many DATA answers come ``stall_seconds`` after the commit
    stall_seconds: float = 0.0
    deliveries: list[Delivery] = field(default_factory=list)
    sessions: int = 0
    rcpt_seen: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _controller: Controller | None = None

    async def start(self) -> "ScriptedSmtp":
        kwargs: dict[str, Any] = {"enable_SMTPUTF8": True}
        if self.tls_context is not None and not self.implicit_tls:
            kwargs.update(tls_context=self.tls_context, require_starttls=True)
        if self.users is not None:
            kwargs.update(authenticator=self._authenticate, auth_required=True)
            if self.implicit_tls:
                kwargs["auth_require_tls"] = False  # aiosmtpd only counts STARTTLS as TLS; this is TLS already
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port,
                                      ssl_context=self.tls_context if self.implicit_tls else None, **kwargs)
        await asyncio.to_thread(self._controller.start)
        return self

    async def stop(self) -> None:
        if self._controller is not None:
            await asyncio.to_thread(self._controller.stop)
            self._controller = None

    def by_message_id(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for d in list(self.deliveries):
            counts[d.message_id] = counts.get(d.message_id, 0) + 1
        return counts

    def to(self, address: str) -> list[Delivery]:
        return [d for d in list(self.deliveries) if address in d.rcpt_tos]

    # -- aiosmtpd hooks (run on the controller's thread) --------------------------------------

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            login, password = auth_data.login.decode(), auth_data.password.decode()
            if self.users is not None and self.users.get(login) == password:
                return AuthResult(success=True, auth_data=login)
        return AuthResult(success=False, handled=False)

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        with self._lock:
            self.sessions += 1
            stall = self.stall_greetings > 0
            if stall:
                self.stall_greetings -= 1
        if stall:
            await asyncio.sleep(self.stall_seconds)
        session.host_name = hostname
        return responses

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]) -> str:
        with self._lock:
            self.rcpt_seen.append(address)
            if address in self.always_refuse:
                return self.always_refuse[address]
            scripted = self.rcpt_replies.get(address)
            if scripted:
                return scripted.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        with self._lock:
            self.deliveries.append(Delivery(str(parsed["Message-ID"]), envelope.mail_from, tuple(envelope.rcpt_tos),
                                            raw, server.transport.get_extra_info("ssl_object") is not None,
                                            session.auth_data))
            stall = self.stall_data_answers > 0
            if stall:
                self.stall_data_answers -= 1
        if stall:
            await asyncio.sleep(self.stall_seconds)
        return f"250 2.0.0 Accepted as {len(self.deliveries)}"


def certificate_authority(tmp_path: Any) -> tuple[Any, str]:
    """A throwaway CA (trustme) and its PEM file; ``server_context(ca)`` serves 127.0.0.1."""
    import trustme

    ca = trustme.CA()
    path = tmp_path / "relay-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ca, str(path)


def server_context(ca: Any) -> Any:
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


class HoldProxy:
    """Forwards TCP to ``target_port`` until ``pattern`` shows up in the ``direction`` stream
    (``"up"``: client → server, ``"down"``: server → client), then freezes every link.

    ``forward``: ``"none"`` (the chunk with the pattern is held back), ``"before"`` (the bytes
    before the pattern go through, the pattern and the rest are held) or ``"all"`` (the chunk goes
    through, then the freeze). ``skip``: sightings to let pass first.
    """

    def __init__(self, target_port: int, pattern: bytes | None = None, direction: str = "up",
                 forward: str = "none", skip: int = 0):
        self.target_port = target_port
        self.pattern = pattern
        self.direction = direction
        self.forward = forward
        self.skip = skip
        self.held = asyncio.Event()
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task] = set()
        self._frozen = False

    async def start(self) -> "HoldProxy":
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers += [writer, up_writer]
        for src, dst, direction in ((reader, up_writer, "up"), (up_reader, writer, "down")):
            task = asyncio.create_task(self._pump(src, dst, direction))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, direction: str) -> None:
        tail = b""
        try:
            while not self._frozen:
                chunk = await src.read(65536)
                if not chunk or self._frozen:
                    break
                window = tail + chunk
                at = window.find(self.pattern) if self.pattern and direction == self.direction else -1
                if at >= 0 and self.skip > 0:
                    self.skip -= 1
                    at = -1
                if at >= 0:
                    self._frozen = True
                    before = max(0, at - len(tail))
                    passed = {"none": b"", "before": chunk[:before], "all": chunk}[self.forward]
                    if passed:
                        dst.write(passed)
                        await dst.drain()
                    self.held.set()
                    break
                dst.write(chunk)
                await dst.drain()
                tail = window[-len(self.pattern):] if self.pattern else b""
        except (ConnectionError, OSError):
            pass
        if not self._frozen:
            dst.close()
        # Frozen: leave both ends open until release(), like a link that stopped moving.

    async def release(self) -> None:
        """Close every link (the server sees its client gone) and stop listening."""
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
