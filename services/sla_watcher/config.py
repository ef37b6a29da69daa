"""SLA watcher settings: the common ones plus the policy file."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from shared.config import CommonSettings, Variable, read

SLA_POLICY_FILE_KEY = "TM_SLA_POLICY_FILE"  # container-config key, same name as the variable
DEFAULT_SLA_POLICY_FILE = "deploy/config/sla.yaml"

VARIABLES = (
    Variable(SLA_POLICY_FILE_KEY, DEFAULT_SLA_POLICY_FILE, "SLA policies: first-response targets per priority and channel"),
)


@dataclass(frozen=True)
class Settings:
    common: CommonSettings
    sla_policy_file: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        return cls(
            common=CommonSettings.from_env(environ),
            sla_policy_file=read(environ, SLA_POLICY_FILE_KEY, DEFAULT_SLA_POLICY_FILE),
        )

    def container_config(self) -> dict[str, str]:
        return {SLA_POLICY_FILE_KEY: self.sla_policy_file}
