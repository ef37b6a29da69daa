"""notifier settings: where mail goes out and who it is from."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared import mail_tokens
from shared.config import CommonSettings, ConfigError, Variable, as_bool, read

VARIABLES = (
    Variable("TM_NOTIFIER_HOST", "127.0.0.1", "address of the notifier's health endpoint"),
    Variable("TM_NOTIFIER_PORT", "8083", "port of the notifier's health endpoint (GET /healthz)"),
    Variable("TM_SMTP_HOST", "127.0.0.1", "SMTP relay the notifier sends through"),
    Variable("TM_SMTP_PORT", "2525", "SMTP relay port (2525 is the dev sink)"),
    Variable("TM_SMTP_USER", "", "SMTP login (empty: no AUTH)"),
    Variable("TM_SMTP_PASSWORD", "", "SMTP password"),
    Variable("TM_SMTP_STARTTLS", "false", "upgrade the SMTP connection with STARTTLS"),
    Variable("TM_SMTP_TIMEOUT", "10", "seconds before an SMTP step counts as failed (retried)"),
    Variable("TM_MAIL_FROM", "support@ticketmesh.test", "From of every mail; the Reply-To is its signed plus address "
             "(support+TM-n.<sig>@…: the inbound MTA must deliver plus addresses to this mailbox); its domain names "
             "our Message-IDs"),
    Variable("TM_MAIL_FROM_NAME", "TicketMesh Support", "display name beside TM_MAIL_FROM"),
    Variable("TM_SUPERVISOR_EMAIL", "supervisor@ticketmesh.test", "who gets SLA breach notices"),
    Variable("TM_SUPERVISOR_LANGUAGE", "zh-CN", "language of SLA breach notices (zh-CN or en)"),
    Variable("TM_MAIL_TIMEZONE", "Asia/Shanghai", "time zone for times written in mails"),
    Variable("TM_ROSTER_FILE", "deploy/demo/roster.yaml", "agent roster (for agents' display names)"),
    *mail_tokens.VARIABLES,
)
_DEFAULTS = {v.name: v.default for v in VARIABLES}


def _zone(raw: str) -> ZoneInfo:
    try:
        return ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone: {exc}") from None


def _port(raw: str) -> int:
    port = int(raw)
    if not 0 < port < 65536:
        raise ValueError("expected 1-65535")
    return port


def _address(raw: str) -> str:
    if "@" not in raw or any(c.isspace() for c in raw):
        raise ValueError("expected an email address")
    return raw


@dataclass(frozen=True)
class Settings:
    common: CommonSettings
    host: str
    port: int
    smtp_host: str
    smtp_port: int
    smtp_user: str
    smtp_password: str = field(repr=False)
    smtp_starttls: bool
    smtp_timeout: float
    mail_from: str
    mail_from_name: str
    supervisor_email: str
    supervisor_language: str
    mail_timezone: ZoneInfo
    roster_file: str
    mail_token_secret: bytes = field(default=mail_tokens.DEV_SECRET.encode(), repr=False)
    mail_token_secret_is_dev_default: bool = True

    @property
    def mail_domain(self) -> str:
        return self.mail_from.rsplit("@", 1)[1]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        def get(name, cast=str):  # type: ignore[no-untyped-def]
            return read(environ, name, _DEFAULTS[name], cast)

        language = get("TM_SUPERVISOR_LANGUAGE")
        if language not in ("zh-CN", "en"):
            raise ConfigError(f"TM_SUPERVISOR_LANGUAGE={language!r} is not valid: expected zh-CN or en")
        secret, dev_default = mail_tokens.secret_from_env(environ)
        return cls(
            mail_token_secret=secret,
            mail_token_secret_is_dev_default=dev_default,
            common=CommonSettings.from_env(environ),
            host=get("TM_NOTIFIER_HOST"),
            port=get("TM_NOTIFIER_PORT", int),
            smtp_host=get("TM_SMTP_HOST"),
            smtp_port=get("TM_SMTP_PORT", _port),
            smtp_user=get("TM_SMTP_USER"),
            smtp_password=get("TM_SMTP_PASSWORD"),
            smtp_starttls=get("TM_SMTP_STARTTLS", as_bool),
            smtp_timeout=get("TM_SMTP_TIMEOUT", float),
            mail_from=get("TM_MAIL_FROM", _address),
            mail_from_name=get("TM_MAIL_FROM_NAME"),
            supervisor_email=get("TM_SUPERVISOR_EMAIL", _address),
            supervisor_language=language,
            mail_timezone=get("TM_MAIL_TIMEZONE", _zone),
            roster_file=get("TM_ROSTER_FILE"),
        )
