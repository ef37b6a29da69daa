"""SLA watcher settings: the common ones plus the policy file."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from shared.config import CommonSettings, Variable, read

SLA_POLICY_FILE_KEY = "TM_SLA_POLICY_FILE"  # container-config key, same name as the variable
DEFAULT_SLA_POLICY_FILE = "deploy/config/sla.yaml"
HEALTH_HOST_KEY = "TM_SLA_WATCHER_HEALTH_HOST"
HEALTH_PORT_KEY = "TM_SLA_WATCHER_HEALTH_PORT"
DEFAULT_HEALTH_HOST = "127.0.0.1"
DEFAULT_HEALTH_PORT = "8086"

VARIABLES = (
    Variable(HEALTH_HOST_KEY, DEFAULT_HEALTH_HOST, "address /healthz, /readyz and /metrics listen on (0.0.0.0 for a scraper elsewhere)"),
    Variable(HEALTH_PORT_KEY, DEFAULT_HEALTH_PORT, "HTTP port of /healthz, /readyz and /metrics"),
    Variable(SLA_POLICY_FILE_KEY, DEFAULT_SLA_POLICY_FILE, "SLA policies: first-response targets per priority and channel"),
)


@dataclass(frozen=True)
class Settings:
    common: CommonSettings
    sla_policy_file: str
    health_address: str = f"{DEFAULT_HEALTH_HOST}:{DEFAULT_HEALTH_PORT}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        return cls(
            common=CommonSettings.from_env(environ),
            sla_policy_file=read(environ, SLA_POLICY_FILE_KEY, DEFAULT_SLA_POLICY_FILE),
            health_address=f"{read(environ, HEALTH_HOST_KEY, DEFAULT_HEALTH_HOST)}:"
                           f"{read(environ, HEALTH_PORT_KEY, DEFAULT_HEALTH_PORT, int)}",
        )

    def container_config(self) -> dict[str, str]:
        return {SLA_POLICY_FILE_KEY: self.sla_policy_file, "WEB_SERVER_ADDRESS": self.health_address}
