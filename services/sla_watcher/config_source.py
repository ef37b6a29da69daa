"""The policy file and the calendars file it names, re-read when either changes.

``current(now)`` looks at the files at most once per ``interval`` (``refresh`` at once); a
changed pair that loads becomes the config in use and is registered in Redis as a config
generation (see engine.py). A pair that does not load keeps the last good one in use and logs
``config_reload_failed`` once per message; at start a bad file raises (the start fails).
The files read at start are registered on first use, not at start: a replica whose Redis is
away starts anyway and reports not ready (/readyz) instead of crash-looping; until Redis is
back, ``current``/``refresh`` raise its ConnectionError (a transient error: events are retried).
Holiday year files are read with the calendars file: after editing one, touch calendars.yaml.
"""
from __future__ import annotations

import uuid
from pathlib import Path

from services.sla_watcher.engine import Loaded
from services.sla_watcher.store import SlaStore
from shared.config_files import ConfigFileError
from shared.logging import get_logger
from shared.reloading import ReloadingFile
from shared.sla_policy import calendars_path, load_sla_config

log = get_logger(__name__)


def _text(text: str) -> str:
    return text


class SlaConfigFiles:
    def __init__(self, path: str | Path, store: SlaStore, *, now: float, interval: float):
        self.path = Path(path)
        self.store = store
        self.interval = interval
        self.owner = uuid.uuid4().hex  # this replica, in the recompute walk's lease
        self._initial = load_sla_config(self.path)  # a bad file fails the start, Redis or not
        self._loaded: Loaded | None = None
        self._watch(now)
        self._checked_at = now
        self._failed: str | None = None

    @property
    def loaded(self) -> Loaded:
        """The config in use with its generation; the first call registers the start's files."""
        if self._loaded is None:
            config = self._initial
            self._loaded = Loaded(config, self.store.register_config(config.digest))
            log.info("sla_config_loaded", path=str(self.path), policies=len(config.policies),
                     calendars=sorted(config.calendars), gen=self._loaded.gen)
        return self._loaded

    def _watch(self, now: float) -> None:
        import yaml

        self._files = [ReloadingFile(self.path, _text, now=now, interval=0, name="sla policies")]
        try:
            data = yaml.safe_load(self._files[0].value)
        except yaml.YAMLError:
            data = None
        calendars = calendars_path(self.path, data)
        if calendars is not None:
            self._files.append(ReloadingFile(calendars, _text, now=now, interval=0, name="calendars"))

    def current(self, now: float) -> Loaded:
        if now - self._checked_at >= self.interval:
            self.refresh(now)
        return self.loaded

    def refresh(self, now: float) -> Loaded:
        """Look at the files now; a new good version is registered and used from here on."""
        self._checked_at = now
        changed = [f.check() for f in self._files]
        if not any(changed) and self._failed is None:
            # The same files may have become the newest generation again elsewhere (a version
            # put back while this replica never saw the one in between).
            gen = self.store.gen_of(self.loaded.config.digest)
            if gen is not None and gen > self.loaded.gen:
                self._loaded = Loaded(self.loaded.config, gen)
            return self.loaded
        try:
            config = load_sla_config(self.path)
        except (ConfigFileError, OSError, UnicodeDecodeError) as exc:
            message = str(exc)
            if message != self._failed:
                self._failed = message
                log.warning("config_reload_failed", config="sla policies", path=str(self.path), error=message,
                            kept_gen=self.loaded.gen)
            return self.loaded
        self._failed = None
        if config.digest != self.loaded.config.digest:
            self._loaded = Loaded(config, self.store.register_config(config.digest))
            self._watch(now)  # the policy file may name another calendars file now
            log.info("sla_config_reloaded", path=str(self.path), policies=len(config.policies),
                     calendars=sorted(config.calendars), gen=self.loaded.gen)
        return self.loaded
