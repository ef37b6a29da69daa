"""notifier settings: where mail goes out and who it is from, what customers and staff are told
(``TM_NOTIFY_*``: robots, templates, the acknowledgement's wait, chat idle time, customer
links), and how mail is delivered.

Delivery (:class:`DeliverySettings`): how the SMTP connection is secured (plain, STARTTLS or
implicit TLS, with an optional CA file for a private relay's certificate), how often a
deferred mail is retried (exponential backoff with full jitter, capped, at most N attempts,
then a dead letter), how many mails are in flight at once, and the loop-protection caps on
automatic mail per recipient (defaults from Zammad's sliding windows, anchors §2.2).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.notifier import loop_safety
from shared import customer_links, mail_tokens
from shared.config import CommonSettings, ConfigError, Variable, as_bool, read

VARIABLES = (
    Variable("TM_NOTIFIER_HOST", "127.0.0.1", "address of the notifier's health endpoint"),
    Variable("TM_NOTIFIER_PORT", "8083", "port of the notifier's health endpoint (GET /healthz)"),
    Variable("TM_SMTP_HOST", "127.0.0.1", "SMTP relay the notifier sends through"),
    Variable("TM_SMTP_PORT", "2525", "SMTP relay port (2525 is the dev sink)"),
    Variable("TM_SMTP_USER", "", "SMTP login (empty: no AUTH)"),
    Variable("TM_SMTP_PASSWORD", "", "SMTP password"),
    Variable("TM_SMTP_STARTTLS", "false", "upgrade the SMTP connection with STARTTLS (required: no plain fallback)"),
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
    Variable("TM_SLA_POLICY_FILE", "deploy/config/sla.yaml", "SLA policies (the acknowledgement's expected response "
             "time)"),
    *customer_links.VARIABLES,
)
DELIVERY_VARIABLES = (
    Variable("TM_SMTP_TLS", "false", "connect to the SMTP relay over TLS from the start (implicit TLS, port 465); "
             "exclusive with TM_SMTP_STARTTLS"),
    Variable("TM_SMTP_CA_FILE", "", "PEM file of the CA that signed the relay's certificate (empty: the system's CAs)"),
    Variable("TM_NOTIFIER_MAX_ATTEMPTS", "10", "SMTP attempts per mail before it becomes a dead letter "
             "(ticketmesh notifications dead / replay)"),
    Variable("TM_NOTIFIER_RETRY_BASE_SECONDS", "30", "first retry of a deferred mail within this many seconds; "
             "doubles per attempt (full jitter)"),
    Variable("TM_NOTIFIER_RETRY_CAP_SECONDS", "3600", "longest wait between two attempts of one mail"),
    Variable("TM_NOTIFIER_SENDERS", "4", "mails in flight at once per notifier (one SMTP connection each, reused)"),
    Variable("TM_NOTIFIER_LEASE_SECONDS", "60", "a mail claimed by a notifier that died is tried again after this "
             "(at least 2 x TM_SMTP_TIMEOUT + 1)"),
    Variable("TM_NOTIFIER_CAPS_PER_TICKET", "10:10,30:15,60:25,180:50,600:100",
             "automatic mails to one recipient about one ticket: minutes:max, ... (empty: no cap)"),
    Variable("TM_NOTIFIER_CAPS_PER_RECIPIENT", "10:30,30:60,60:120,180:240,600:360",
             "automatic mails to one recipient about all tickets: minutes:max, ... (empty: no cap)"),
    Variable("TM_NOTIFIER_CAP_EXEMPT", "", "comma-separated addresses the caps never apply to (e.g. an internal "
             "supervisors' list that must get every notice)"),
)
VARIABLES = VARIABLES + DELIVERY_VARIABLES
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


PLAIN, STARTTLS, TLS = "plain", "starttls", "tls"


def _positive(cast):  # type: ignore[no-untyped-def]
    def parse(raw: str):  # type: ignore[no-untyped-def]
        value = cast(raw)
        if value <= 0:
            raise ValueError("expected a positive number")
        return value
    return parse


@dataclass(frozen=True)
class DeliverySettings:
    """How mail is handed to the relay and what happens when it does not take it."""

    tls: str = PLAIN                 # plain, starttls or tls (implicit)
    ca_file: str = ""
    max_attempts: int = 10
    retry_base_seconds: float = 30.0
    retry_cap_seconds: float = 3600.0
    senders: int = 4
    lease_seconds: float = 60.0
    caps: loop_safety.Caps = field(default_factory=lambda: loop_safety.Caps(
        loop_safety.parse_windows(loop_safety.DEFAULT_PER_TICKET),
        loop_safety.parse_windows(loop_safety.DEFAULT_PER_RECIPIENT)))

    @classmethod
    def from_env(cls, environ: Mapping[str, str], smtp_timeout: float) -> "DeliverySettings":
        def get(name, cast=str):  # type: ignore[no-untyped-def]
            return read(environ, name, _DEFAULTS[name], cast)

        starttls, implicit = get("TM_SMTP_STARTTLS", as_bool), get("TM_SMTP_TLS", as_bool)
        if starttls and implicit:
            raise ConfigError("TM_SMTP_STARTTLS and TM_SMTP_TLS are exclusive: STARTTLS upgrades a plain "
                              "connection (port 587), TM_SMTP_TLS starts with TLS (port 465)")
        ca_file = get("TM_SMTP_CA_FILE")
        if ca_file and not os.path.isfile(ca_file):
            raise ConfigError(f"TM_SMTP_CA_FILE={ca_file!r} is not a file")
        base, cap = get("TM_NOTIFIER_RETRY_BASE_SECONDS", _positive(float)), get("TM_NOTIFIER_RETRY_CAP_SECONDS",
                                                                                  _positive(float))
        if cap < base:
            raise ConfigError(f"TM_NOTIFIER_RETRY_CAP_SECONDS={cap:g} is below TM_NOTIFIER_RETRY_BASE_SECONDS={base:g}")
        lease = get("TM_NOTIFIER_LEASE_SECONDS", _positive(float))
        if lease < 2 * smtp_timeout + 1:
            # The lease must outlast DATA and its answer (two timeouts), or a second notifier
            # could take the mail over while the first is still sending it.
            raise ConfigError(f"TM_NOTIFIER_LEASE_SECONDS={lease:g} must be at least 2 x TM_SMTP_TIMEOUT + 1 "
                              f"({2 * smtp_timeout + 1:g})")
        return cls(
            tls=STARTTLS if starttls else TLS if implicit else PLAIN,
            ca_file=ca_file,
            max_attempts=get("TM_NOTIFIER_MAX_ATTEMPTS", _positive(int)),
            retry_base_seconds=base,
            retry_cap_seconds=cap,
            senders=get("TM_NOTIFIER_SENDERS", _positive(int)),
            lease_seconds=lease,
            caps=loop_safety.Caps(
                per_ticket=get("TM_NOTIFIER_CAPS_PER_TICKET", loop_safety.parse_windows),
                per_recipient=get("TM_NOTIFIER_CAPS_PER_RECIPIENT", loop_safety.parse_windows),
                exempt=get("TM_NOTIFIER_CAP_EXEMPT", loop_safety.parse_exempt),
            ),
        )


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
    sla_policy_file: str = "deploy/config/sla.yaml"
    customer_base_url: str = "http://127.0.0.1:8081"
    customer_link_secret: bytes = field(default=customer_links.DEV_SECRET.encode(), repr=False)
    customer_link_secret_is_dev_default: bool = True
    delivery: DeliverySettings = field(default_factory=DeliverySettings)

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
        smtp_timeout = get("TM_SMTP_TIMEOUT", _positive(float))
        return cls(
            delivery=DeliverySettings.from_env(environ, smtp_timeout),
            notify_config_file=get("TM_NOTIFY_CONFIG_FILE"),
            templates_dir=get("TM_NOTIFY_TEMPLATES_DIR") or None,
            ack_wait_seconds=get("TM_NOTIFY_ACK_WAIT_SECONDS", _seconds),
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
            smtp_timeout=smtp_timeout,
            mail_from=get("TM_MAIL_FROM", _address),
            mail_from_name=get("TM_MAIL_FROM_NAME"),
            supervisor_email=get("TM_SUPERVISOR_EMAIL", _address),
            supervisor_language=language,
            mail_timezone=get("TM_MAIL_TIMEZONE", _zone),
            roster_file=get("TM_ROSTER_FILE"),
        )
