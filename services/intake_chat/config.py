"""intake_chat settings: the common ones, the chat endpoint's and the customer pages' (status, survey)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

from shared import customer_links
from shared.config import CommonSettings, ConfigError, Variable, read

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
)
_DEFAULTS = {v.name: v.default for v in VARIABLES}


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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        origins = read(environ, "TM_CHAT_ALLOWED_ORIGINS", _DEFAULTS["TM_CHAT_ALLOWED_ORIGINS"])
        region = read(environ, "TM_CHAT_PHONE_REGION", _DEFAULTS["TM_CHAT_PHONE_REGION"], str.upper)
        if len(region) != 2 or not region.isalpha():
            raise ConfigError(f"TM_CHAT_PHONE_REGION={region!r} is not valid: expected a two-letter region such as CN")
        link_secret, dev_default = customer_links.secret_from_env(environ)
        return cls(
            common=CommonSettings.from_env(environ),
            host=read(environ, "TM_CHAT_HOST", _DEFAULTS["TM_CHAT_HOST"]),
            port=read(environ, "TM_CHAT_PORT", _DEFAULTS["TM_CHAT_PORT"], int),
            allowed_origins=tuple(o.strip() for o in origins.split(",") if o.strip()),
            roster_file=read(environ, "TM_ROSTER_FILE", _DEFAULTS["TM_ROSTER_FILE"]),
            phone_region=region,
            client_ip_header=read(environ, "TM_CHAT_CLIENT_IP_HEADER", "").strip(),
            link_secret=link_secret,
            link_secret_is_dev_default=dev_default,
        )
