"""Child processes the developer environment owns: started with their output in a log file,
stopped politely (SIGTERM), then firmly (SIGKILL) after a timeout.

Each child gets its own session, so a Ctrl-C in the terminal reaches only ``./dev`` and the
children are stopped in order (services first, the servers they use last). When started from
the main thread, a child is also asked to die with its parent, so a ``kill -9`` of ``./dev``
leaves nothing behind.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

STOP_TIMEOUT_SECONDS = 10.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    # PR_SET_PDEATHSIG fires when the *thread* that forked exits, so only a main-thread parent
    # is a safe anchor (an executor thread may end long before the mesh should).
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return preexec


def spawn_logged(cmd: Sequence[str], log_path: Path, *, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None) -> subprocess.Popen:
    """Start ``cmd`` with stdout and stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(
            list(cmd), stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
            preexec_fn=_die_with_parent(),
        )


def signal_group(proc: subprocess.Popen, signum: int) -> None:
    """Signal the child's whole session (it leads its own group), ignoring one already gone."""
    try:
        os.killpg(proc.pid, signum)
    except (ProcessLookupError, PermissionError):
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            pass


def stop_processes(procs: Sequence[subprocess.Popen], timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """SIGTERM all at once, wait up to ``timeout`` for them together, SIGKILL what is left."""
    running = [p for p in procs if p.poll() is None]
    for proc in running:
        signal_group(proc, signal.SIGTERM)
    deadline_wait(running, timeout)
    for proc in running:
        if proc.poll() is None:
            signal_group(proc, signal.SIGKILL)
            proc.wait()


def deadline_wait(procs: Sequence[subprocess.Popen], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for proc in procs:
        remaining = deadline - time.monotonic()
        try:
            proc.wait(timeout=max(0.0, remaining))
        except subprocess.TimeoutExpired:
            pass


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file, for error messages (empty if there is none)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])
