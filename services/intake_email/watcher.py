"""``@watch_mailbox``: a nameko entrypoint that turns each new message of a mailbox into a worker.

One greenthread per configured mailbox runs this loop:

1. take the mailbox lease in Redis (one replica watches a mailbox; others stand by);
2. connect, log in, SELECT the folder, read UIDVALIDITY;
3. find pending mail:
   - with a checkpoint for this UIDVALIDITY: every UID above it, read or unread — the checkpoint
     is the authority, so mail a person opened in webmail during our downtime is still ingested;
   - without one (first start, lost Redis, UIDVALIDITY changed): the unread mail, because mail
     already read was handled by someone; the checkpoint is then set to the newest UID;
4. for each message, oldest first: fetch it with BODY.PEEK[] (not marking it read), run the
   decorated method as a worker and wait for it. Only when it succeeded — its events confirmed
   by the broker — flag the message ``\\Seen`` (and, with ``after: archive``, move it to the
   archive folder) and advance the checkpoint. A worker that fails
   transiently (Redis or RabbitMQ away) leaves both untouched and we retry after a pause; any
   other failure quarantines the message, so one bad mail never blocks the mailbox;
5. IDLE until the server reports a change or ``poll_seconds`` pass (plain polling when the server
   has no IDLE), then back to 3. While the IDLE is quiet on an open connection, ``last_ok_at``
   moves on every ``TM_IMAP_STALL_SECONDS / 4`` (a server that goes away closes the connection
   and ends the IDLE at once), so only a watcher that is really stuck looks stalled.

Any connection failure is logged as ``mailbox_connect_failed``, a refused login as
``mailbox_auth_failed``; both are retried with exponential backoff (capped). Each mailbox has
its own loop, so one that cannot connect never holds up the others.

The replica watching a mailbox records its state in Redis (``watching``, ``reconnecting``,
``auth_failed``, since when, when it last went well, the last error; see
:mod:`~services.intake_email.health`), which ``/readyz`` of any replica reads.

Stopping the container wakes the loop, lets the message in hand
finish, ends IDLE and logs out.
"""
from __future__ import annotations

import os
import random
import select
import socket
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable

import eventlet
from eventlet.event import Event
from greenlet import GreenletExit
from nameko.exceptions import ContainerBeingKilled
from nameko.extensions import Entrypoint

from shared.errors import TRANSIENT_ERRORS, is_transient
from shared.logging import get_logger
from services.intake_email import health
from services.intake_email.config import (AFTER_ARCHIVE, MAILBOXES_CONFIG_KEY, REPLICA_CONFIG_KEY, STALL_CONFIG_KEY,
                                          MailboxSettings)
from services.intake_email.imap import CONNECTION_ERRORS, FetchedMail, MailboxConnection, MessageMeta, login_refused
from services.intake_email.quarantine import Quarantine
from services.intake_email.store import IntakeEmailStore

log = get_logger(__name__)

RECONNECT_FIRST_DELAY_SECONDS = 1.0
LEASE_MIN_TTL_SECONDS = 60.0
LEASE_RETRY_SECONDS = 5.0
STOP_TIMEOUT_SECONDS = 15.0
KILL_GRACE_SECONDS = 1.0
ROUND_LIMIT = 500  # messages per round, so a huge backlog still renews the lease and notices a stop
HEARTBEAT_MIN_INTERVAL_SECONDS = 1.0  # last_ok_at is written at most this often
# A quiet IDLE beats this many times per stall period, so a healthy idle mailbox never looks stalled.
HEARTBEATS_PER_STALL = 4
DEFAULT_STALL_SECONDS = 120.0


class _Stopping(Exception):
    """The container is stopping: leave the loop without touching the message in hand."""


class _RetryLater(Exception):
    """Handling failed for a reason that will pass: keep the message unread, pause, start over."""


class _LeaseLost(Exception):
    """Another replica took the mailbox over (we were away longer than the lease)."""


class _FolderRecreated(Exception):
    """The folder has a new UIDVALIDITY under our session: select it afresh."""


def backoff_delay(failures: int, cap: float) -> float:
    base = min(cap, RECONNECT_FIRST_DELAY_SECONDS * 2 ** max(0, failures - 1))
    return base * random.uniform(0.8, 1.0)


class MailboxLoop:
    """The watch loop of one mailbox; see the module docstring."""

    def __init__(self, settings: MailboxSettings, store: IntakeEmailStore, quarantine: Quarantine, holder: str,
                 handle: Callable[[FetchedMail], tuple[Any, Any]], stall_seconds: float = DEFAULT_STALL_SECONDS):
        self.settings = settings
        self.heartbeat_every = min(stall_seconds / HEARTBEATS_PER_STALL, settings.poll_seconds)
        self.store = store
        self.quarantine = quarantine
        self.holder = holder
        self.handle = handle
        self.lease_ttl = max(LEASE_MIN_TTL_SECONDS, 3 * settings.poll_seconds)
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe()
        self._lease_renewed_at = 0.0
        self._failures = 0  # consecutive failed attempts
        self._state = ""  # what we last recorded in Redis
        self._heartbeat_at = 0.0
        self.thread: Any = None

    # -- control (called from other greenthreads) ---------------------------------------------

    def request_stop(self) -> None:
        if not self._stopping:
            self._stopping = True
            os.write(self._wake_w, b"x")

    def close(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> None:
        name = self.settings.name
        try:
            while not self._stopping:
                try:
                    if not self.store.hold_lease(name, self.holder, self.lease_ttl):
                        retry_in = min(LEASE_RETRY_SECONDS, self.settings.poll_seconds)
                        log.debug("mailbox_standby", mailbox=name, retry_in=retry_in)
                        self._state = health.STANDBY  # the holder's record in Redis stays as it is
                        self._sleep(retry_in)
                        continue
                    self._lease_renewed_at = time.monotonic()
                    if self._state not in (health.RECONNECTING, health.AUTH_FAILED):
                        self._record_state(health.RECONNECTING)
                    self._session()
                except _Stopping:
                    break
                except _LeaseLost:
                    log.warning("mailbox_lease_lost", mailbox=name)
                except _FolderRecreated as exc:
                    # Not a failure: the next session selects the new folder and the checkpoint
                    # logic treats it as a new UIDVALIDITY (Message-ID dedupe keeps it exactly-once).
                    log.warning("mailbox_folder_recreated", mailbox=name, detail=str(exc))
                except _RetryLater as exc:
                    self._failures += 1
                    delay = backoff_delay(self._failures, self.settings.reconnect_max_seconds)
                    log.warning("mail_retry_later", mailbox=name, error=str(exc), retry_in=round(delay, 2))
                    self._sleep(delay)
                except (*CONNECTION_ERRORS, *TRANSIENT_ERRORS) as exc:
                    if not login_refused(exc):
                        self._connection_failed(exc)
                        continue
                    self._failures += 1
                    delay = backoff_delay(self._failures, self.settings.reconnect_max_seconds)
                    # The server's answer only: imapclient never puts the password or token in it.
                    log.error("mailbox_auth_failed", mailbox=name, host=self.settings.host, port=self.settings.port,
                              user=self.settings.user, error=_describe(exc), attempt=self._failures,
                              xoauth2=bool(self.settings.xoauth2_token_file), retry_in=round(delay, 2))
                    self._record_state(health.AUTH_FAILED, error=_describe(exc))
                    self._sleep(delay)
                except Exception as exc:  # noqa: BLE001 - the loop must outlive any surprise
                    self._failures += 1
                    delay = backoff_delay(self._failures, self.settings.reconnect_max_seconds)
                    log.exception("mailbox_loop_failed", mailbox=name, error=_describe(exc), retry_in=round(delay, 2))
                    self._record_state(health.RECONNECTING, error=_describe(exc))
                    self._sleep(delay)
        finally:
            try:
                self.store.release_lease(name, self.holder)
            except Exception:  # noqa: BLE001 - it expires on its own
                log.warning("mailbox_lease_release_failed", mailbox=name)
            log.info("mailbox_watch_stopped", mailbox=name)

    def _session(self) -> None:
        conn = MailboxConnection.open(self.settings)
        graceful = False
        try:
            log.info("mailbox_connected", mailbox=self.settings.name, uidvalidity=conn.uidvalidity, idle=conn.can_idle)
            self._record_state(health.WATCHING)
            while not self._stopping:
                more = self._ingest_round(conn)
                self._failures = 0  # a clean round: the next trouble starts the backoff afresh
                self._heartbeat()
                if more or self._stopping:
                    continue
                self._renew_lease()
                conn.wait_for_change(self.settings.poll_seconds, self._wake_r, quiet=self._heartbeat,
                                     quiet_every=self.heartbeat_every)
                self._heartbeat()
                self._renew_lease()
            graceful = True
        except _Stopping:
            graceful = True
            raise
        finally:
            conn.close(graceful=graceful)

    def _ingest_round(self, conn: MailboxConnection) -> bool:
        """Handle pending mail; True when more is waiting than one round takes."""
        s = self.settings
        if conn.folder_was_recreated():
            raise _FolderRecreated(f"{s.folder}: UIDVALIDITY changed since SELECT")
        # What this round's searches will see anyway (the re-SELECT above reports EXISTS too).
        conn.take_new_mail_notices()
        checkpoint = self.store.checkpoint(s.name)
        resume = checkpoint is not None and checkpoint.uidvalidity == conn.uidvalidity and checkpoint.account == s.account
        if resume:
            pending = conn.uids_after(checkpoint.last_uid)
            newest = None
        else:
            if checkpoint is not None:
                log.warning("mailbox_checkpoint_reset", mailbox=s.name, old_uidvalidity=checkpoint.uidvalidity,
                            uidvalidity=conn.uidvalidity)
            newest = conn.highest_uid()
            pending = conn.unseen_uids(up_to=newest)
        log.debug("mailbox_round", mailbox=s.name, resume=resume, pending=len(pending), newest=newest)
        more = len(pending) > ROUND_LIMIT
        pending = pending[:ROUND_LIMIT]
        if pending:
            log.info("mailbox_pending", mailbox=s.name, count=len(pending), more=more,
                     since_uid=checkpoint.last_uid if resume else None, mode="checkpoint" if resume else "unseen")
        meta = conn.fetch_meta(pending)
        for uid in pending:
            if self._stopping:
                return False
            self._ingest_one(conn, uid, meta.get(uid), advance=resume)
            self._renew_lease(only_if_due=True)
        if newest is not None and not more:
            # Everything unread up to `newest` is handled; from here on the UID checkpoint rules.
            self.store.advance_checkpoint(s.name, account=s.account, uidvalidity=conn.uidvalidity, uid=newest)
        return more or conn.take_new_mail_notices()

    def _ingest_one(self, conn: MailboxConnection, uid: int, meta: MessageMeta | None, *, advance: bool) -> None:
        s = self.settings
        fetched = conn.fetch(uid, meta) if meta is not None else None
        if fetched is None:
            log.info("mail_vanished", mailbox=s.name, uid=uid)  # expunged by someone else meanwhile
        else:
            self._handle(fetched)
            conn.mark_seen(uid)
            if s.after == AFTER_ARCHIVE:
                conn.move_to_archive(uid)
        if advance:
            self.store.advance_checkpoint(s.name, account=s.account, uidvalidity=conn.uidvalidity, uid=uid)

    def _handle(self, fetched: FetchedMail) -> None:
        try:
            _result, exc_info = self.handle(fetched)
        except ContainerBeingKilled:
            raise _Stopping() from None
        if exc_info is None:
            return
        exc = exc_info[1]
        if is_transient(exc):
            raise _RetryLater(f"uid {fetched.uid}: {_describe(exc)}")
        reason = f"handler failed: {_describe(exc)}"
        try:
            path = self.quarantine.put(fetched, reason, now=datetime.now(timezone.utc))
        except OSError as write_error:
            raise _RetryLater(f"quarantine write failed: {write_error}") from None
        log.error("mail_quarantined", mailbox=fetched.mailbox, uid=fetched.uid, reason=reason, path=str(path))

    # -- helpers -------------------------------------------------------------------------------

    def _renew_lease(self, only_if_due: bool = False) -> None:
        if only_if_due and time.monotonic() - self._lease_renewed_at < self.lease_ttl / 3:
            return
        if not self.store.hold_lease(self.settings.name, self.holder, self.lease_ttl):
            raise _LeaseLost()
        self._lease_renewed_at = time.monotonic()

    def _connection_failed(self, exc: BaseException) -> None:
        self._failures += 1
        self._record_state(health.RECONNECTING, error=_describe(exc))
        delay = backoff_delay(self._failures, self.settings.reconnect_max_seconds)
        log.warning("mailbox_connect_failed", mailbox=self.settings.name, host=self.settings.host,
                    port=self.settings.port, user=self.settings.user, error=_describe(exc),
                    attempt=self._failures, retry_in=round(delay, 2))
        self._sleep(delay)

    def _record_state(self, state: str, *, error: str = "") -> None:
        """Tell the other replicas (and /readyz) how this mailbox is doing; never fails the loop."""
        now = time.time()
        fields: dict[str, Any] = {"state": state, "holder": self.holder}
        if state != self._state:
            fields["since"] = now
        if state == health.WATCHING:
            fields.update(last_ok_at=now, last_error="")
            self._heartbeat_at = time.monotonic()
        elif error:
            fields["last_error"] = health.short_error(error)
        try:
            self.store.record_mailbox_state(self.settings.name, **fields)
            self._state = state
        except Exception as exc:  # noqa: BLE001 - Redis away: the loop's own handling will notice
            log.debug("mailbox_state_not_recorded", mailbox=self.settings.name, error=_describe(exc))

    def _heartbeat(self) -> None:
        """A round went well, or an IDLE is going on quietly on an open connection: move
        last_ok_at on (at most once a second)."""
        if time.monotonic() - self._heartbeat_at < HEARTBEAT_MIN_INTERVAL_SECONDS:
            return
        self.store.record_mailbox_state(self.settings.name, last_ok_at=time.time(), holder=self.holder)
        self._heartbeat_at = time.monotonic()

    def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when asked to stop."""
        select.select([self._wake_r], [], [], seconds)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]


class MailboxWatcher(Entrypoint):
    """Entrypoint: one :class:`MailboxLoop` per mailbox in the ``INTAKE_EMAIL_MAILBOXES`` config."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("expected_exceptions", TRANSIENT_ERRORS)
        super().__init__(**kwargs)

    def setup(self) -> None:
        self.loops: list[MailboxLoop] = []

    def start(self) -> None:
        # The service's own store and quarantine (its providers are set up by now): one Redis
        # pool and one quarantine folder per container, not a second set for the loops.
        config = self.container.config
        store = self._provided(IntakeEmailStore, "store")
        quarantine = self._provided(Quarantine, "quarantine")
        # A configured replica id is stable across restarts, so a replica that was killed takes
        # its mailboxes back at once instead of waiting for its own lease to expire; without one,
        # the holder is unique even for two containers in one process.
        replica = config.get(REPLICA_CONFIG_KEY)
        holder = str(replica) if replica else f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        stall_seconds = float(config.get(STALL_CONFIG_KEY, DEFAULT_STALL_SECONDS))
        self.loops = [MailboxLoop(MailboxSettings.from_config(raw), store, quarantine, holder, self._run_worker,
                                  stall_seconds=stall_seconds)
                      for raw in config.get(MAILBOXES_CONFIG_KEY, [])]
        for loop in self.loops:
            loop.thread = self.container.spawn_managed_thread(loop.run, identifier=f"mailbox:{loop.settings.name}")

    def stop(self) -> None:
        """Let each loop finish the message in hand, end IDLE and log out."""
        for loop in self.loops:
            loop.request_stop()
        for loop in self.loops:
            _join(loop.thread, STOP_TIMEOUT_SECONDS)
            if loop.thread is not None:
                loop.thread.kill()
            _close_if_finished(loop)

    def kill(self) -> None:
        for loop in self.loops:
            loop.request_stop()
            if loop.thread is not None:
                loop.thread.kill()
                _join(loop.thread, KILL_GRACE_SECONDS)  # its `finally` releases the lease
            _close_if_finished(loop)

    def _provided(self, kind: type, attribute: str) -> Any:
        for provider in self.container.dependencies:
            value = getattr(provider, attribute, None)
            if isinstance(value, kind):
                return value
        raise RuntimeError(f"{self.container.service_name} has no provider of {kind.__name__}; "
                           "@watch_mailbox needs the service to declare one")

    def _run_worker(self, fetched: FetchedMail) -> tuple[Any, Any]:
        """Run the decorated method on ``fetched`` and wait: ``(result, exc_info)``."""
        done = Event()

        def handle_result(worker_ctx: Any, result: Any, exc_info: Any) -> tuple[Any, Any]:
            done.send((result, exc_info))
            return result, exc_info

        self.container.spawn_worker(self, (fetched,), {}, handle_result=handle_result)
        return done.wait()


watch_mailbox = MailboxWatcher.decorator


def _close_if_finished(loop: MailboxLoop) -> None:
    """Close the loop's wake pipe only once its thread is gone: closing a descriptor a live green
    thread still waits on leaves eventlet listening on a number the process will reuse."""
    if loop.thread is None or getattr(loop.thread, "dead", True):
        loop.close()
    else:
        log.warning("mailbox_loop_not_finished", mailbox=loop.settings.name)


def _join(thread: Any, timeout: float) -> None:
    if thread is None:
        return
    with eventlet.Timeout(timeout, False):
        try:
            thread.wait()
        except (Exception, GreenletExit):  # noqa: BLE001 - a killed loop reports GreenletExit; it is gone either way
            pass
