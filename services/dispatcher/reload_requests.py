"""The dispatcher's side of ``ticketmesh roster|rules reload`` (shared/config_reload.py): one
responder per container, kept across workers, answering under the heartbeat's replica name."""
from __future__ import annotations

from typing import Any

from nameko.extensions import DependencyProvider

from shared.config_reload import ROSTER, RULES, ReloadStore, Responder
from shared.nameko_ext import REDIS_URL_KEY
from shared.nameko_health import Observability
from shared.redis_store import sync_client
from shared.reloading import ReloadingFile


def file_state(file: ReloadingFile) -> tuple[str, str, int, str | None]:
    # ReloadingFile keeps the digest of the version in use private; it is the hash the command
    # compares, so it is read here rather than by hashing the file again (which may have moved on).
    return str(file.path), file.digest, file.version, file.last_error


class ReloadRequests(DependencyProvider):
    def setup(self) -> None:
        self.client = sync_client(self.container.config[REDIS_URL_KEY])
        self.responder: Responder | None = None

    def stop(self) -> None:
        self.client.close()

    def get_dependency(self, worker_ctx: Any) -> Responder:
        if self.responder is None:  # every setup has run by now: the heartbeat has its replica name
            replica = next(p.replica for p in self.container.dependencies if isinstance(p, Observability))
            self.responder = Responder(ReloadStore(self.client), replica)
        return self.responder


def report_files(responder: Responder, rules: ReloadingFile, roster: ReloadingFile, *, request: int | None,
           now: float) -> None:
    responder.report({RULES: file_state(rules), ROSTER: file_state(roster)}, request=request, now=now)
