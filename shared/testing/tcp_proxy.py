"""A TCP proxy for fault tests: forwards bytes between a client and a server until a rule cuts it.

    proxy = FaultProxy("127.0.0.1", dovecot.port, cut=CutRule(after_client_sends=b"BODY.PEEK[]",
                                                               skip=1, response_bytes=2000))
    proxy.start()          # the service connects to proxy.port instead of the server's
    ...
    proxy.cuts             # how many connections the rule has cut so far

A rule watches what the client sends; once ``after_client_sends`` has been seen (after ``skip``
earlier sightings), the proxy lets ``response_bytes`` more bytes of the server's answer through and
then resets both sides (RST, not FIN: as a dead server or a NAT timeout looks to the client).
With ``forward_trigger=False`` the cut comes before the command reaches the server (the
client's last command is lost, as when the link dies while sending). It fires ``times`` times in
all; later connections are forwarded untouched.

Plain blocking sockets and threads, so it runs unchanged under eventlet's monkey-patching (the
nameko tier: the threads become green threads) and next to an asyncio test (real threads).
"""
from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass

CHUNK = 16 * 1024


@dataclass(frozen=True)
class CutRule:
    after_client_sends: bytes      # the pattern in the client's stream that arms the cut
    response_bytes: int = 0        # server bytes let through after the pattern, then the cut
    skip: int = 0                  # sightings of the pattern to let pass before arming
    times: int = 1                 # connections to cut in all
    forward_trigger: bool = True   # False: cut before the client's chunk with the pattern reaches the server


class _Link:
    """One client connection and its upstream; the two pump threads share it.

    Each socket is closed only by the pump that reads it, after its recv() returned: closing a
    socket another green thread is blocked on leaves eventlet listening on a file descriptor
    the next socket or pipe of the process will reuse ("Second simultaneous read").
    """

    def __init__(self, proxy: "FaultProxy", client: socket.socket, upstream: socket.socket):
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.armed_budget: int | None = None   # server bytes still allowed through once armed
        self.client_tail = b""                 # end of the client's stream, for patterns split across reads
        self.closed = False
        self.lock = threading.Lock()

    def from_client(self, data: bytes) -> None:
        rule = self.proxy.cut
        if rule is not None and self.armed_budget is None:
            window = self.client_tail + data
            found = window.count(rule.after_client_sends)
            self.client_tail = window[-max(0, len(rule.after_client_sends) - 1):] if rule.after_client_sends else b""
            if found and self.proxy._claim_sightings(found):
                if not rule.forward_trigger:
                    self.cut()
                    return
                self.armed_budget = rule.response_bytes
        self.upstream.sendall(data)

    def from_server(self, data: bytes) -> bool:
        """Forward ``data`` (or as much as the rule allows); False once the link was cut."""
        if self.armed_budget is None:
            self.client.sendall(data)
            return True
        allowed, self.armed_budget = data[:self.armed_budget], self.armed_budget - min(len(data), self.armed_budget)
        if allowed:
            self.client.sendall(allowed)
        if len(allowed) < len(data) or self.armed_budget == 0:
            self.cut()
            return False
        return True

    def cut(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for sock in (self.client, self.upstream):
            try:
                # Linger 0: the close (by the pump that reads this socket) sends RST. SHUT_RD
                # wakes that pump's recv() with EOF.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        self.proxy._note_cut()

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for sock in (self.client, self.upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class FaultProxy:
    """Listens on 127.0.0.1 (a free port); one pair of pump threads per accepted connection."""

    def __init__(self, target_host: str, target_port: int, cut: CutRule | None = None):
        self.target = (target_host, target_port)
        self.cut = cut
        self.cuts = 0
        self.connections = 0
        self._sightings = 0
        self._armed = 0
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._listener: socket.socket | None = None
        self._stopping = False
        self.host = "127.0.0.1"
        self.port = 0

    def start(self) -> "FaultProxy":
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, 0))
        listener.listen(16)
        self._listener = listener
        self.port = listener.getsockname()[1]
        threading.Thread(target=self._accept_loop, name="fault-proxy-accept", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping = True
        if self._listener is not None:
            try:
                # Wake the accept() with a connection of our own, then close the listener.
                socket.create_connection((self.host, self.port), timeout=1).close()
            except OSError:
                pass  # the accept loop closes the listener itself (see _Link)
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close()

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------------------

    def _claim_sightings(self, found: int) -> bool:
        """Count ``found`` sightings of the pattern; True when this one should arm a cut."""
        rule = self.cut
        with self._lock:
            self._sightings += found
            if rule is None or self._sightings <= rule.skip or self._armed >= rule.times:
                return False
            self._armed += 1
            return True

    def _note_cut(self) -> None:
        with self._lock:
            self.cuts += 1

    def _accept_loop(self) -> None:
        assert self._listener is not None
        try:
            self._accept_until_stopped()
        finally:
            self._listener.close()

    def _accept_until_stopped(self) -> None:
        assert self._listener is not None
        while not self._stopping:
            try:
                client, _addr = self._listener.accept()
            except OSError:
                return
            if self._stopping:
                client.close()
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()  # the server is down: the client sees it refused, as it would
                continue
            link = _Link(self, client, upstream)
            with self._lock:
                self.connections += 1
                self._links.append(link)
            threading.Thread(target=self._pump, args=(link, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(link, False), daemon=True).start()

    def _pump(self, link: _Link, client_to_server: bool) -> None:
        source = link.client if client_to_server else link.upstream
        try:
            while True:
                data = source.recv(CHUNK)
                if not data:
                    break
                if client_to_server:
                    link.from_client(data)
                elif not link.from_server(data):
                    return
        except (OSError, EOFError):  # EOFError: eventlet's recv() on a socket shut down meanwhile
            pass
        finally:
            link.close()  # wakes the other pump (shutdown), which then closes its own socket
            source.close()
