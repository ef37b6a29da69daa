"""Dispatcher settings: the common ones plus the files it routes by."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from shared.config import CommonSettings, Variable, read

# Container-config keys (``__main__`` fills them from the environment; tests pass them directly).
ROSTER_FILE_KEY = "TM_ROSTER_FILE"
ROUTING_RULES_FILE_KEY = "TM_ROUTING_RULES_FILE"
SLA_POLICY_FILE_KEY = "TM_SLA_POLICY_FILE"
CONFIG_RELOAD_KEY = "TM_CONFIG_RELOAD_SECONDS"
DEFAULT_REGION_KEY = "TM_PHONE_DEFAULT_REGION"

DEFAULT_ROSTER_FILE = "deploy/demo/roster.yaml"
DEFAULT_ROUTING_RULES_FILE = "deploy/config/routing.yaml"
DEFAULT_SLA_POLICY_FILE = "deploy/config/sla.yaml"
DEFAULT_CONFIG_RELOAD_SECONDS = "5"
HEALTH_HOST_KEY = "TM_DISPATCHER_HEALTH_HOST"
HEALTH_PORT_KEY = "TM_DISPATCHER_HEALTH_PORT"
DEFAULT_HEALTH_HOST = "127.0.0.1"
DEFAULT_HEALTH_PORT = "8085"
DEFAULT_REGION = "CN"

VARIABLES = (
    Variable(HEALTH_HOST_KEY, DEFAULT_HEALTH_HOST, "address /healthz, /readyz and /metrics listen on (0.0.0.0 for a scraper elsewhere)"),
    Variable(HEALTH_PORT_KEY, DEFAULT_HEALTH_PORT, "HTTP port of /healthz, /readyz and /metrics"),
    Variable(ROSTER_FILE_KEY, DEFAULT_ROSTER_FILE, "agent roster: skills, languages, capacity per channel"),
    Variable(ROUTING_RULES_FILE_KEY, DEFAULT_ROUTING_RULES_FILE,
             "classification rules (keywords → skills, priority, tags) and the routing: policy section"),
    Variable(SLA_POLICY_FILE_KEY, DEFAULT_SLA_POLICY_FILE, "SLA policies: the queue is ordered by first-response due time"),
    Variable(CONFIG_RELOAD_KEY, DEFAULT_CONFIG_RELOAD_SECONDS,
             "seconds between looks at the rules and roster files: a changed file is used without a restart"),
    Variable(DEFAULT_REGION_KEY, DEFAULT_REGION, "region for customers' phone numbers written without a country code "
             "(a chat's typed number), so one number is one identifier of a customer profile"),
)


@dataclass(frozen=True)
class Settings:
    common: CommonSettings
    roster_file: str
    routing_rules_file: str
    sla_policy_file: str = DEFAULT_SLA_POLICY_FILE
    config_reload_seconds: float = float(DEFAULT_CONFIG_RELOAD_SECONDS)
    health_address: str = f"{DEFAULT_HEALTH_HOST}:{DEFAULT_HEALTH_PORT}"
    default_region: str = DEFAULT_REGION

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        return cls(
            common=CommonSettings.from_env(environ),
            roster_file=read(environ, ROSTER_FILE_KEY, DEFAULT_ROSTER_FILE),
            routing_rules_file=read(environ, ROUTING_RULES_FILE_KEY, DEFAULT_ROUTING_RULES_FILE),
            sla_policy_file=read(environ, SLA_POLICY_FILE_KEY, DEFAULT_SLA_POLICY_FILE),
            config_reload_seconds=read(environ, CONFIG_RELOAD_KEY, DEFAULT_CONFIG_RELOAD_SECONDS, _seconds),
            health_address=f"{read(environ, HEALTH_HOST_KEY, DEFAULT_HEALTH_HOST)}:"
                           f"{read(environ, HEALTH_PORT_KEY, DEFAULT_HEALTH_PORT, int)}",
            default_region=read(environ, DEFAULT_REGION_KEY, DEFAULT_REGION, _region),
        )

    def container_config(self) -> dict[str, str]:
        """The extra nameko config keys the service's providers read."""
        return {ROSTER_FILE_KEY: self.roster_file, ROUTING_RULES_FILE_KEY: self.routing_rules_file,
                SLA_POLICY_FILE_KEY: self.sla_policy_file, CONFIG_RELOAD_KEY: str(self.config_reload_seconds),
                DEFAULT_REGION_KEY: self.default_region, "WEB_SERVER_ADDRESS": self.health_address}


def _seconds(raw: str) -> float:
    value = float(raw)
    if not value >= 0:
        raise ValueError("expected seconds >= 0")
    return value


def _region(raw: str) -> str:
    value = raw.strip().upper()
    if not (len(value) == 2 and value.isalpha()):
        raise ValueError("expected a two-letter region code (ISO 3166), e.g. CN")
    return value
