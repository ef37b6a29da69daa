"""SLA watcher settings: the common ones plus the policy file (which names its calendars file)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from shared.config import CommonSettings, Variable, read

# Container-config keys, same names as the variables (``__main__`` fills them; tests pass them).
SLA_POLICY_FILE_KEY = "TM_SLA_POLICY_FILE"
CONFIG_RELOAD_KEY = "TM_CONFIG_RELOAD_SECONDS"
DEFAULT_SLA_POLICY_FILE = "deploy/config/sla.yaml"
HEALTH_HOST_KEY = "TM_SLA_WATCHER_HEALTH_HOST"
HEALTH_PORT_KEY = "TM_SLA_WATCHER_HEALTH_PORT"
DEFAULT_HEALTH_HOST = "127.0.0.1"
DEFAULT_HEALTH_PORT = "8086"

DEFAULT_CONFIG_RELOAD_SECONDS = "5"

VARIABLES = (
    Variable(HEALTH_HOST_KEY, DEFAULT_HEALTH_HOST, "address /healthz, /readyz and /metrics listen on (0.0.0.0 for a scraper elsewhere)"),
    Variable(HEALTH_PORT_KEY, DEFAULT_HEALTH_PORT, "HTTP port of /healthz, /readyz and /metrics"),
    Variable(SLA_POLICY_FILE_KEY, DEFAULT_SLA_POLICY_FILE,
             "SLA policies: first response, next response and resolution targets, warnings, escalation ladder; "
             "its calendars_file: names the business calendars"),
    Variable(CONFIG_RELOAD_KEY, DEFAULT_CONFIG_RELOAD_SECONDS,
             "seconds between looks at the policy and calendar files: a change recomputes open clocks"),
)


@dataclass(frozen=True)
class Settings:
    common: CommonSettings
    sla_policy_file: str
    config_reload_seconds: float = float(DEFAULT_CONFIG_RELOAD_SECONDS)
    health_address: str = f"{DEFAULT_HEALTH_HOST}:{DEFAULT_HEALTH_PORT}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        return cls(
            common=CommonSettings.from_env(environ),
            sla_policy_file=read(environ, SLA_POLICY_FILE_KEY, DEFAULT_SLA_POLICY_FILE),
            config_reload_seconds=read(environ, CONFIG_RELOAD_KEY, DEFAULT_CONFIG_RELOAD_SECONDS, _seconds),
            health_address=f"{read(environ, HEALTH_HOST_KEY, DEFAULT_HEALTH_HOST)}:"
                           f"{read(environ, HEALTH_PORT_KEY, DEFAULT_HEALTH_PORT, int)}",
        )

    def container_config(self) -> dict[str, str]:
        return {SLA_POLICY_FILE_KEY: self.sla_policy_file, CONFIG_RELOAD_KEY: str(self.config_reload_seconds),
                "WEB_SERVER_ADDRESS": self.health_address}


def _seconds(raw: str) -> float:
    value = float(raw)
    if not value >= 0:
        raise ValueError("expected seconds >= 0")
    return value
