"""One IMAP session on one mailbox folder (imapclient), in the verbs the watcher needs.

Blocking calls throughout: the service runs under eventlet, whose monkey patching makes these
sockets (and ``select``) cooperative. Bodies are fetched with ``BODY.PEEK[]`` so that reading a
message never marks it ``\\Seen`` — the flag is set explicitly, only once the message was
handled. Every failure of the connection surfaces as one of :data:`CONNECTION_ERRORS`.
"""
from __future__ import annotations

import imaplib
import select
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterable

from pathlib import Path

from imapclient import DELETED, SEEN, IMAPClient, SocketTimeout
from imapclient.exceptions import IMAPClientError, LoginError

from services.intake_email.config import MailboxSettings

CONNECT_TIMEOUT_SECONDS = 10.0
READ_TIMEOUT_SECONDS = 60.0  # a server that stops answering mid-command is dropped, not waited on forever
LOGOUT_TIMEOUT_SECONDS = 5.0
IDLE_SETTLE_SECONDS = 1.0  # first IDLE of each wait: its end reports mail that raced our entering IDLE
META_FETCH_CHUNK = 500

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (IMAPClientError, OSError)


def login_refused(exc: BaseException) -> bool:
    """The server said no to our credentials (not: the connection broke during LOGIN).

    imapclient raises LoginError for both; a broken connection is an ``imaplib.IMAP4.abort``
    underneath.
    """
    return isinstance(exc, LoginError) and not isinstance(exc.__context__, imaplib.IMAP4.abort)


def login(settings: MailboxSettings) -> IMAPClient:
    """A connected, logged-in client: XOAUTH2 when a token file is configured, else the password.

    The token file is read at every login, so whatever refreshes the token only has to replace
    the file. A refused login raises :class:`~imapclient.exceptions.LoginError` (never with the
    secret in it: imapclient puts only the server's answer in the message).
    """
    client = IMAPClient(settings.host, port=settings.port, ssl=settings.ssl, use_uid=True,
                        timeout=SocketTimeout(connect=CONNECT_TIMEOUT_SECONDS, read=READ_TIMEOUT_SECONDS))
    try:
        if settings.xoauth2_token_file:
            token = Path(settings.xoauth2_token_file).read_text(encoding="utf-8").strip()
            client.oauth2_login(settings.user, token)
        else:
            client.login(settings.user, settings.password)
    except BaseException:
        client.shutdown()
        raise
    return client


@dataclass(frozen=True)
class FetchedMail:
    """A message as fetched; ``raw`` is the header section only when ``header_only`` (over the size limit)."""

    mailbox: str
    uidvalidity: int
    uid: int
    raw: bytes
    internal_date: datetime
    size: int
    header_only: bool = False

    def __repr__(self) -> str:  # workers and logs may print it: never the content
        return f"FetchedMail({self.mailbox}, uidvalidity={self.uidvalidity}, uid={self.uid}, size={self.size})"


@dataclass(frozen=True)
class MessageMeta:
    size: int
    internal_date: datetime


class MailboxConnection:
    def __init__(self, settings: MailboxSettings, client: IMAPClient, uidvalidity: int, can_idle: bool):
        self.settings = settings
        self.client = client
        self.uidvalidity = uidvalidity
        self.can_idle = can_idle
        self._archive_ready = False

    @classmethod
    def open(cls, settings: MailboxSettings) -> "MailboxConnection":
        """Connect, log in and select the folder (read-write, so flags can be set)."""
        client = login(settings)
        client.normalise_times = False  # keep INTERNALDATE's offset: we want aware datetimes
        try:
            selected = client.select_folder(settings.folder)
            uidvalidity = int(selected[b"UIDVALIDITY"])
            can_idle = client.has_capability("IDLE")
        except BaseException:
            client.shutdown()
            raise
        return cls(settings, client, uidvalidity, can_idle)

    # -- finding mail --------------------------------------------------------------------------

    def folder_was_recreated(self) -> bool:
        """True when the folder's UIDVALIDITY is no longer the one we selected.

        Dovecot may keep a session on a folder that was deleted and created again (or rebuilt)
        and go on answering searches, and even STATUS, for the old one; selecting the folder
        again reads it as it is now (one round trip per round, cheap next to a search).
        """
        selected = self.client.select_folder(self.settings.folder)
        return int(selected[b"UIDVALIDITY"]) != self.uidvalidity

    def highest_uid(self) -> int:
        """UID of the newest message now in the folder (0 when empty)."""
        return max(self.client.search(["UID", "*"]), default=0)

    def uids_after(self, uid: int) -> list[int]:
        # "UID n:*" always matches the newest message, even when its UID is below n: filter here.
        return sorted(u for u in self.client.search(["UID", f"{uid + 1}:*", "NOT", "DELETED"]) if u > uid)

    def unseen_uids(self, up_to: int) -> list[int]:
        return sorted(u for u in self.client.search(["UNSEEN", "NOT", "DELETED"]) if u <= up_to)

    def take_new_mail_notices(self) -> bool:
        """True if the server announced new mail (``* n EXISTS``) during our commands since the last call.

        Such a notice can arrive inside the reply to a SEARCH that was already computed without
        the new message; the server will not repeat it when we IDLE next, so the watcher asks
        here before it idles. (imapclient keeps unsolicited responses in imaplib's dict.)
        """
        untagged = getattr(self.client._imap, "untagged_responses", None)
        return bool(untagged.pop("EXISTS", None)) if isinstance(untagged, dict) else False

    # -- reading and flagging ------------------------------------------------------------------

    def fetch_meta(self, uids: Iterable[int]) -> dict[int, MessageMeta]:
        uids = list(uids)
        meta: dict[int, MessageMeta] = {}
        for start in range(0, len(uids), META_FETCH_CHUNK):
            chunk = uids[start:start + META_FETCH_CHUNK]
            for uid, data in self.client.fetch(chunk, ["RFC822.SIZE", "INTERNALDATE"]).items():
                if b"RFC822.SIZE" in data:
                    meta[uid] = MessageMeta(int(data[b"RFC822.SIZE"]), _utc(data.get(b"INTERNALDATE")))
        return meta

    def fetch(self, uid: int, meta: MessageMeta) -> FetchedMail | None:
        """The message (its header section only when over the size limit); None if it is gone."""
        header_only = meta.size > self.settings.max_message_bytes
        item, key = ("BODY.PEEK[HEADER]", b"BODY[HEADER]") if header_only else ("BODY.PEEK[]", b"BODY[]")
        data = self.client.fetch([uid], [item]).get(uid)
        if not data or data.get(key) is None:
            return None
        return FetchedMail(self.settings.name, self.uidvalidity, uid, bytes(data[key]), meta.internal_date,
                           meta.size, header_only)

    def mark_seen(self, uid: int) -> None:
        self.client.add_flags([uid], [SEEN], silent=True)

    def move_to_archive(self, uid: int) -> None:
        """Move a handled (already ``\\Seen``) message to the archive folder, creating it once.

        MOVE where the server has it; otherwise COPY, flag ``\\Deleted`` and UID EXPUNGE just
        that message (UIDPLUS), never a plain EXPUNGE that would take other clients' deletions.
        A crash between COPY and EXPUNGE leaves a copy in both folders; the copy left in the
        watched folder is ``\\Seen`` and below the checkpoint, so it is not ingested again.
        """
        folder = self.settings.archive_folder
        if not self._archive_ready:
            if not self.client.folder_exists(folder):
                try:
                    self.client.create_folder(folder)
                except IMAPClientError:
                    if not self.client.folder_exists(folder):  # another replica won the race
                        raise
            self._archive_ready = True
        if self.client.has_capability("MOVE"):
            self.client.move([uid], folder)
            return
        self.client.copy([uid], folder)
        self.client.add_flags([uid], [DELETED], silent=True)
        self.client.uid_expunge([uid])

    # -- waiting -------------------------------------------------------------------------------

    def wait_for_change(self, timeout: float, wake_fd: int, *, quiet: Callable[[], None] | None = None,
                        quiet_every: float | None = None) -> None:
        """Return when the folder may have changed, after ``timeout`` at most, or when ``wake_fd`` is readable.

        With IDLE the server tells us about new mail; without it this is one poll interval.
        The caller searches again afterwards either way.

        Servers do not report everything to a client entering IDLE: Dovecot reports a message
        that lands just before or while IDLE starts only when the IDLE ends. So: a NOOP first
        (a sync point for what arrived since our last command), then a short first IDLE whose
        end reports anything that slipped into that window, then IDLE for the rest of the time.

        ``quiet`` is called every ``quiet_every`` seconds the wait goes on with the connection
        open and nothing to read: the watcher's heartbeat, so a long healthy IDLE does not look
        stalled. A server that goes away closes the socket, which ends the wait at once (the
        IDLE's end then fails and the watcher reconnects).
        """
        _text, responses = self.client.noop()
        if _announces_new_mail(responses) or self.take_new_mail_notices():
            return
        if not self.can_idle:
            _select_in_slices([wake_fd], timeout, quiet, quiet_every)
            return
        settle = min(IDLE_SETTLE_SECONDS, timeout)
        for period in (settle, timeout - settle):
            # A notice that reached imaplib's stash while one IDLE ended is not repeated by the
            # server in the next one: look before idling on.
            if period <= 0 or self._idle_for(period, wake_fd, quiet, quiet_every) or self.take_new_mail_notices():
                return

    def _idle_for(self, seconds: float, wake_fd: int, quiet: Callable[[], None] | None,
                  quiet_every: float | None) -> bool:
        """IDLE up to ``seconds``; True when the server said something or we were woken."""
        self.client.idle()
        try:
            if self._response_already_buffered():
                return True  # (the finally ends IDLE and reads it)
            readable = _select_in_slices([self.client.socket(), wake_fd], seconds, quiet, quiet_every)
            if self.client.socket() in readable:
                self.client.idle_check(timeout=0)
        finally:
            # Ending IDLE is also the liveness check: a dead server fails here and we reconnect.
            _text, responses = self.client.idle_done()
        return bool(readable) or _announces_new_mail(responses)

    def _response_already_buffered(self) -> bool:
        """Did the server's first notice arrive together with IDLE's "+ idling" line?

        imaplib reads the socket through a buffer: a "* n EXISTS" sent in the same packet as the
        continuation sits in that buffer, the socket is no longer readable, and select() would
        wait out the whole IDLE. Peek without blocking (socket briefly non-blocking).
        """
        reader = getattr(self.client._imap, "file", None)
        sock = self.client.socket()
        if reader is None or not hasattr(reader, "peek"):
            return False
        timeout = sock.gettimeout()
        try:
            sock.settimeout(0)
            return bool(reader.peek(1))
        except (BlockingIOError, OSError, ValueError):
            return False
        finally:
            sock.settimeout(timeout)

    def close(self, *, graceful: bool) -> None:
        """Log out politely when stopping; just drop the socket when the session already failed."""
        if graceful:
            try:
                self.client.socket().settimeout(LOGOUT_TIMEOUT_SECONDS)
                self.client.logout()
                return
            except (*CONNECTION_ERRORS, socket.timeout):
                pass
        try:
            self.client.shutdown()
        except OSError:
            pass


def _select_in_slices(fds: list, seconds: float, quiet: Callable[[], None] | None,
                      quiet_every: float | None) -> list:
    """``select`` on ``fds`` for up to ``seconds``, calling ``quiet`` after each quiet slice."""
    if quiet is None or not quiet_every or quiet_every <= 0:
        return select.select(fds, [], [], seconds)[0]
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return []
        readable, _, _ = select.select(fds, [], [], min(quiet_every, left))
        if readable:
            return readable
        quiet()


def _announces_new_mail(responses: Iterable[object]) -> bool:
    return any(isinstance(r, tuple) and len(r) >= 2 and r[1] == b"EXISTS" for r in responses)


def _utc(value: object) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime.now(timezone.utc)
