"""A config file that is re-read when it changes, without a restart and without timers.

The caller asks for :meth:`ReloadingFile.current` with the time; at most once per ``interval``
the file is stat'ed, and only when its mtime, size or inode moved is it read, and only when its
content hash differs from the version in use is it parsed again. A file that no longer parses
(or is gone) does not take the service down: the last good value stays in use and
``config_reload_failed`` is logged once per bad version, so a broken file seen every few
seconds is one log line, not thousands. The first load happens in the constructor and raises:
a service must not start on a bad file.

No threads and no clock of its own: ``now`` is passed in, so tests drive it with numbers.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Generic, TypeVar

from shared.logging import get_logger

T = TypeVar("T")

log = get_logger(__name__)

DEFAULT_CHECK_INTERVAL = 5.0  # seconds between stats: cheap, and quick enough for a person editing rules


class ReloadingFile(Generic[T]):
    """``parse(text)`` turns the file's UTF-8 text into a value or raises (any exception is a
    bad version; its message is what gets logged, so it should name the file and the entry)."""

    def __init__(self, path: str | Path, parse: Callable[[str], T], *, now: float,
                 interval: float = DEFAULT_CHECK_INTERVAL, name: str = "config"):
        if interval < 0:
            raise ValueError("interval must not be negative")
        self.path = Path(path)
        self.name = name
        self.interval = interval
        self._parse = parse
        self._stat_key = self._stat()
        raw = self.path.read_bytes()
        self._value: T = parse(raw.decode("utf-8"))  # raises: no good version to fall back on yet
        self._digest = hashlib.sha256(raw).hexdigest()
        self._bad_digest: str | None = None
        self._checked_at = now
        self.version = 1
        self.last_error: str | None = None

    @property
    def value(self) -> T:
        """The value in use, without looking at the file."""
        return self._value

    @property
    def digest(self) -> str:
        """SHA-256 of the bytes of the version in use (what ``ticketmesh … reload`` compares)."""
        return self._digest

    def current(self, now: float) -> T:
        """The newest good value; looks at the file when ``interval`` has passed since the last look."""
        if now - self._checked_at < self.interval:
            return self._value
        self._checked_at = now
        self.check()
        return self._value

    def check(self) -> bool:
        """Look at the file now; True when a new version was loaded."""
        try:
            key = self._stat()
        except OSError as exc:
            self._failed(f"cannot read {self.name} {self.path}: {exc.strerror or exc}", digest=f"stat:{exc.errno}")
            return False
        if key == self._stat_key:
            return False
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            self._failed(f"cannot read {self.name} {self.path}: {exc.strerror or exc}", digest=f"read:{exc.errno}")
            return False
        digest = hashlib.sha256(raw).hexdigest()
        if digest == self._digest:  # touched or rewritten unchanged: nothing to parse
            self._stat_key = key
            self._recovered()
            return False
        if digest == self._bad_digest:  # the same broken version, already reported
            self._stat_key = key
            return False
        try:
            value = self._parse(raw.decode("utf-8"))
        except Exception as exc:  # noqa: BLE001 - any failure of a new version keeps the old one
            self._stat_key = key
            self._failed(str(exc) or type(exc).__name__, digest=digest)
            return False
        self._value, self._digest, self._stat_key = value, digest, key
        self._bad_digest, self.last_error = None, None
        self.version += 1
        log.info("config_reloaded", config=self.name, path=str(self.path), version=self.version,
                 sha256=digest[:12])
        return True

    def _stat(self) -> tuple[int, int, int]:
        st = os.stat(self.path)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _failed(self, error: str, *, digest: str) -> None:
        if digest == self._bad_digest:
            return
        self._bad_digest, self.last_error = digest, error
        # Forget the stat key so that putting the old file back is noticed as a change.
        if digest.startswith(("stat:", "read:")):
            self._stat_key = (-1, -1, -1)
        log.warning("config_reload_failed", config=self.name, path=str(self.path), error=error,
                    kept_version=self.version)

    def _recovered(self) -> None:
        self._bad_digest, self.last_error = None, None
