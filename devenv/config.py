"""Settings of the developer environment (``./dev up`` / ``./dev test``), read from the environment.

The defaults match docs/service-contracts.md, so a bare ``./dev up`` needs no variables at all.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from shared.config import read

REPO_ROOT = Path(__file__).resolve().parent.parent
# intake_phone refuses tokens shorter than 16 characters; this one is for the local demo only.
DEMO_CTI_TOKEN = "demo-cti-token-local"


@dataclass(frozen=True)
class DevSettings:
    repo_root: Path
    var_dir: Path
    amqp_uri: str
    rabbit_mgmt_url: str
    redis_url: str
    imap_port: int
    smtp_port: int
    sink_web_port: int
    desk_port: int
    chat_port: int
    phone_port: int
    notifier_port: int
    intake_email_health_port: int
    cti_token: str
    roster_file: Path
    routing_rules_file: Path
    sla_policy_file: Path
    test_redis_db: int
    # Where the demo traffic goes: 127.0.0.1 on one machine; the services' names under compose.
    demo_imap_host: str = "127.0.0.1"
    demo_chat_host: str = "127.0.0.1"
    demo_phone_host: str = "127.0.0.1"

    @property
    def log_dir(self) -> Path:
        return self.var_dir / "log"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, repo_root: Path = REPO_ROOT) -> "DevSettings":
        var_dir = Path(read(environ, "TM_VAR_DIR", str(repo_root / "var")))
        smtp_default = environ.get("TM_SINK_SMTP_PORT", "2525")
        return cls(
            repo_root=repo_root,
            var_dir=var_dir,
            amqp_uri=read(environ, "TM_AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/"),
            rabbit_mgmt_url=read(environ, "TM_RABBIT_MGMT_URL", "http://guest:guest@127.0.0.1:15672"),
            redis_url=read(environ, "TM_REDIS_URL", "redis://127.0.0.1:6379/0"),
            imap_port=read(environ, "TM_IMAP_PORT", "1143", int),
            smtp_port=read(environ, "TM_SMTP_PORT", smtp_default, int),
            sink_web_port=read(environ, "TM_SINK_WEB_PORT", "8025", int),
            desk_port=read(environ, "TM_DESK_PORT", "8080", int),
            chat_port=read(environ, "TM_CHAT_PORT", "8081", int),
            phone_port=read(environ, "TM_PHONE_PORT", "8082", int),
            notifier_port=read(environ, "TM_NOTIFIER_PORT", "8083", int),
            intake_email_health_port=read(environ, "TM_INTAKE_EMAIL_HEALTH_PORT", "8084", int),
            cti_token=read(environ, "TM_CTI_TOKEN", DEMO_CTI_TOKEN),
            roster_file=Path(read(environ, "TM_ROSTER_FILE", str(repo_root / "deploy/demo/roster.yaml"))),
            routing_rules_file=Path(read(environ, "TM_ROUTING_RULES_FILE", str(repo_root / "deploy/config/routing.yaml"))),
            sla_policy_file=Path(read(environ, "TM_SLA_POLICY_FILE", str(repo_root / "deploy/config/sla.yaml"))),
            test_redis_db=read(environ, "TM_TEST_REDIS_DB", "15", int),
            demo_imap_host=read(environ, "TM_DEMO_IMAP_HOST", "127.0.0.1"),
            demo_chat_host=read(environ, "TM_DEMO_CHAT_HOST", "127.0.0.1"),
            demo_phone_host=read(environ, "TM_DEMO_PHONE_HOST", "127.0.0.1"),
        )
