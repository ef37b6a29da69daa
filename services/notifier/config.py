"""notifier settings: where mail goes out and who it is from."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared import customer_links, mail_tokens
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
    Variable("TM_SUPERVISOR_EMAIL", "supervisor@ticketmesh.test", "who gets SLA breach notices and escalations' notify_supervisor steps"),
    Variable("TM_SUPERVISOR_LANGUAGE", "zh-CN", "language of mail to TM_SUPERVISOR_EMAIL (zh-CN or en)"),
    Variable("TM_MAIL_TIMEZONE", "Asia/Shanghai", "time zone for times written in mails"),
    Variable("TM_ROSTER_FILE", "deploy/demo/roster.yaml", "agent roster (agents' names, and the addresses, languages and tiers staff mail goes by)"),
    *mail_tokens.VARIABLES,
    # What customers and agents are told (issue 6).
    Variable("TM_NOTIFY_CONFIG_FILE", "deploy/config/notify.yaml", "group chat robots (which events go where; "
             "addresses and secrets from the environment variables it names) and customer mail switches"),
    Variable("TM_NOTIFY_TEMPLATES_DIR", "", "directory of mail templates that replace the shipped ones file by file "
             "(empty: the shipped templates)"),
    Variable("TM_NOTIFY_ACK_WAIT_SECONDS", "30", "how long the acknowledgement waits for the ticket's classification "
             "(to say when to expect an answer) before it goes out without one; 0: do not wait"),
    Variable("TM_NOTIFY_CHAT_IDLE_MINUTES", "10", "a chat customer silent for this long is taken to have left the "
             "widget: replies and updates then go to the address they gave, by mail"),
    Variable("TM_SLA_POLICY_FILE", "deploy/config/sla.yaml", "SLA policies (the acknowledgement's expected response "
             "time)"),
    *customer_links.VARIABLES,
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


def _seconds(raw: str) -> float:
    value = float(raw)
    if not 0 <= value <= 86400:
        raise ValueError("expected 0-86400")
    return value


def _base_url(raw: str) -> str:
    if not raw.startswith(("http://", "https://")):
        raise ValueError("expected an http(s) address")
    return raw.rstrip("/")


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
    notify_config_file: str = "deploy/config/notify.yaml"
    templates_dir: str | None = None
    ack_wait_seconds: float = 30.0
    chat_idle_seconds: float = 600.0
    sla_policy_file: str = "deploy/config/sla.yaml"
    customer_base_url: str = "http://127.0.0.1:8081"
    customer_link_secret: bytes = field(default=customer_links.DEV_SECRET.encode(), repr=False)
    customer_link_secret_is_dev_default: bool = True

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
        link_secret, link_dev_default = customer_links.secret_from_env(environ)
        return cls(
            notify_config_file=get("TM_NOTIFY_CONFIG_FILE"),
            templates_dir=get("TM_NOTIFY_TEMPLATES_DIR") or None,
            ack_wait_seconds=get("TM_NOTIFY_ACK_WAIT_SECONDS", _seconds),
            chat_idle_seconds=get("TM_NOTIFY_CHAT_IDLE_MINUTES", _seconds) * 60,
            sla_policy_file=get("TM_SLA_POLICY_FILE"),
            customer_base_url=get(customer_links.BASE_URL_VARIABLE, _base_url),
            customer_link_secret=link_secret,
            customer_link_secret_is_dev_default=link_dev_default,
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
