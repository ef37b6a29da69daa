"""intake_chat settings: the common ones, the chat endpoint's and the customer pages' (status, survey)."""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from typing import Mapping

from shared import customer_links
from shared.config import CommonSettings, ConfigError, Variable, read

# Per address: generous, because many customers can share one (an office, a mobile carrier's NAT);
# per visitor: what a person typing can do.
DEFAULT_RATE_LIMITS = ("ip_connects=120/60,ip_messages=600/60,session_messages=30/60,ip_conversations=60/3600,"
                       "session_uploads=20/3600,session_transcripts=3/3600")
DEFAULT_UPLOAD_TYPES = "image/png,image/jpeg,image/gif,image/webp,application/pdf"

VARIABLES = (
    Variable("TM_CHAT_HOST", "127.0.0.1", "address the chat page, widget and WebSocket listen on"),
    Variable("TM_CHAT_PORT", "8081", "port of the chat service"),
    Variable("TM_CHAT_ALLOWED_ORIGINS", "http://127.0.0.1:*,http://localhost:*",
             "comma-separated origins of pages that may embed the widget (besides the chat page's own); "
             "'https://shop.example.com', 'http://localhost:*' (any port) or '*'"),
    Variable("TM_ROSTER_FILE", "deploy/demo/roster.yaml", "agent roster; chat shows customers the agents' display names"),
    Variable("TM_CHAT_PHONE_REGION", "CN", "region of phone numbers typed without a country code on the ticket "
             "status lookup (ISO 3166), so '138 1234 5678' matches the caller +8613812345678"),
    Variable("TM_CHAT_CLIENT_IP_HEADER", "", "header holding the customer's address behind a proxy, e.g. "
             "X-Forwarded-For (its last entry is used); empty: the peer address. Status lookups are rate "
             "limited per address"),
    *customer_links.VARIABLES,
    Variable("TM_SLA_POLICY_FILE", "deploy/config/sla.yaml",
             "SLA policies: the widget's expected wait never promises less than the first-response target allows"),
    Variable("TM_CHAT_IDENTITY_SECRETS", "",
             "per-site secrets for verified visitors, 'site=secret,site2=secret2': a site's server signs its "
             "logged-in user's id (hex HMAC-SHA256) and the widget passes it; empty = nobody is verified"),
    Variable("TM_CHAT_BLOCKED_IPS", "", "comma-separated addresses or networks (CIDR) refused by the chat"),
    Variable("TM_CHAT_TRUSTED_PROXIES", "",
             "comma-separated proxy addresses/networks whose X-Forwarded-For names the visitor's address"),
    Variable("TM_CHAT_RATE_LIMITS", DEFAULT_RATE_LIMITS,
             "name=count/seconds windows: ip_connects, ip_messages, session_messages, ip_conversations, "
             "session_uploads, session_transcripts"),
    Variable("TM_CHAT_UPLOAD_MAX_BYTES", str(10 * 1024 * 1024), "largest file a visitor may upload"),
    Variable("TM_CHAT_UPLOAD_TYPES", DEFAULT_UPLOAD_TYPES,
             "file types a visitor may upload, judged from the bytes (the browser's type is not trusted)"),
    Variable("TM_CHAT_REPLY_EMAIL_DELAY_SECONDS", "120",
             "an agent reply no widget of the customer received within this delay is mailed to them"),
    Variable("TM_CHAT_HANDLE_SECONDS", "300", "average minutes an agent spends on a chat, in seconds (queue estimate)"),
    Variable("TM_CHAT_QUEUE_REFRESH_SECONDS", "5", "how often waiting visitors' queue place is refreshed"),
    Variable("TM_CHAT_SWEEP_SECONDS", "1", "how often due missed-reply mails are looked for"),
)
_DEFAULTS = {v.name: v.default for v in VARIABLES}
RATE_LIMIT_NAMES = ("ip_connects", "ip_messages", "session_messages", "ip_conversations", "session_uploads",
                    "session_transcripts")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class RateLimit:
    count: int
    seconds: int


def _rate_pairs(raw: str) -> dict[str, RateLimit]:
    limits = {}
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        name, _, spec = part.partition("=")
        count, _, seconds = spec.partition("/")
        name = name.strip()
        if name not in RATE_LIMIT_NAMES:
            raise ValueError(f"unknown rate limit {name!r} (known: {', '.join(RATE_LIMIT_NAMES)})")
        limit = RateLimit(int(count), int(seconds))
        if limit.count < 0 or limit.seconds <= 0:
            raise ValueError(f"{name}: expected count/seconds with count >= 0 and seconds > 0")
        limits[name] = limit
    return limits


def parse_rate_limits(raw: str) -> dict[str, RateLimit]:
    """``ip_messages=120/60,...`` → limits; names left out keep their defaults; ``0/…`` = no limit."""
    return {**_rate_pairs(DEFAULT_RATE_LIMITS), **_rate_pairs(raw)}


def parse_secrets(raw: str) -> dict[str, bytes]:
    secrets = {}
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        site, sep, secret = part.partition("=")
        if not sep or not site.strip() or len(secret.strip()) < 16:
            raise ValueError("expected site=secret pairs with secrets of at least 16 characters")
        secrets[site.strip()] = secret.strip().encode()
    return secrets


def parse_networks(raw: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in raw.split(",") if p.strip())


def _positive(cast):
    def check(raw: str):
        value = cast(raw)
        if not value > 0:
            raise ValueError("expected a positive number")
        return value
    return check


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0:
        raise ValueError("expected seconds >= 0")
    return value


@dataclass(frozen=True)
class Settings:
    common: CommonSettings
    host: str
    port: int
    allowed_origins: tuple[str, ...]
    roster_file: str
    phone_region: str = "CN"
    client_ip_header: str = ""
    link_secret: bytes = field(default=customer_links.DEV_SECRET.encode(), repr=False)
    link_secret_is_dev_default: bool = True
    sla_policy_file: str = _DEFAULTS["TM_SLA_POLICY_FILE"]
    identity_secrets: dict[str, bytes] = field(default_factory=dict, repr=False)
    blocked_networks: tuple[Network, ...] = ()
    trusted_proxies: tuple[Network, ...] = ()
    rate_limits: dict[str, RateLimit] = field(default_factory=lambda: parse_rate_limits(DEFAULT_RATE_LIMITS))
    upload_max_bytes: int = 10 * 1024 * 1024
    upload_types: tuple[str, ...] = tuple(DEFAULT_UPLOAD_TYPES.split(","))
    reply_email_delay_seconds: float = 120.0
    handle_seconds: float = 300.0
    queue_refresh_seconds: float = 5.0
    sweep_seconds: float = 1.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        def get(name: str, cast=str):
            return read(environ, name, _DEFAULTS[name], cast)

        origins = get("TM_CHAT_ALLOWED_ORIGINS")
        region = get("TM_CHAT_PHONE_REGION", str.upper)
        if len(region) != 2 or not region.isalpha():
            raise ConfigError(f"TM_CHAT_PHONE_REGION={region!r} is not valid: expected a two-letter region such as CN")
        link_secret, dev_default = customer_links.secret_from_env(environ)
        return cls(
            common=CommonSettings.from_env(environ),
            host=get("TM_CHAT_HOST"),
            port=get("TM_CHAT_PORT", int),
            allowed_origins=tuple(o.strip() for o in origins.split(",") if o.strip()),
            roster_file=get("TM_ROSTER_FILE"),
            phone_region=region,
            client_ip_header=read(environ, "TM_CHAT_CLIENT_IP_HEADER", "").strip(),
            link_secret=link_secret,
            link_secret_is_dev_default=dev_default,
            sla_policy_file=get("TM_SLA_POLICY_FILE"),
            identity_secrets=get("TM_CHAT_IDENTITY_SECRETS", parse_secrets),
            blocked_networks=get("TM_CHAT_BLOCKED_IPS", parse_networks),
            trusted_proxies=get("TM_CHAT_TRUSTED_PROXIES", parse_networks),
            rate_limits=get("TM_CHAT_RATE_LIMITS", parse_rate_limits),
            upload_max_bytes=get("TM_CHAT_UPLOAD_MAX_BYTES", _positive(int)),
            upload_types=tuple(t.strip().lower() for t in get("TM_CHAT_UPLOAD_TYPES").split(",") if t.strip()),
            reply_email_delay_seconds=get("TM_CHAT_REPLY_EMAIL_DELAY_SECONDS", _non_negative_float),
            handle_seconds=get("TM_CHAT_HANDLE_SECONDS", _positive(float)),
            queue_refresh_seconds=get("TM_CHAT_QUEUE_REFRESH_SECONDS", _positive(float)),
            sweep_seconds=get("TM_CHAT_SWEEP_SECONDS", _positive(float)),
        )
