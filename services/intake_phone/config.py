"""intake_phone settings: the common ones plus the CTI endpoint's."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from shared.config import CommonSettings, ConfigError, Variable, read

from services.intake_phone.phone_numbers import InvalidNumber, normalize

VARIABLES = (
    Variable("TM_PHONE_HOST", "127.0.0.1", "address the CTI webhook listens on"),
    Variable("TM_PHONE_PORT", "8082", "port of the CTI webhook"),
    Variable("TM_CTI_TOKEN", None, "secret in the webhook URL /api/v1/cti/<token> (required)"),
    Variable("TM_PHONE_DEFAULT_REGION", "CN", "region for numbers dialled without a country code (ISO 3166)"),
    Variable("TM_PHONE_BLOCKED_NUMBERS", "", "comma-separated caller ids to reject as busy"),
)
_DEFAULTS = {v.name: v.default for v in VARIABLES}
TOKEN_MIN_CHARS = 16


@dataclass(frozen=True)
class Settings:
    common: CommonSettings
    host: str
    port: int
    cti_token: str
    default_region: str
    blocked_numbers: frozenset[str]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        region = read(environ, "TM_PHONE_DEFAULT_REGION", _DEFAULTS["TM_PHONE_DEFAULT_REGION"], str.upper)
        token = read(environ, "TM_CTI_TOKEN", None)
        if len(token) < TOKEN_MIN_CHARS:
            raise ConfigError(f"TM_CTI_TOKEN must be at least {TOKEN_MIN_CHARS} characters")
        raw_blocked = read(environ, "TM_PHONE_BLOCKED_NUMBERS", "")
        return cls(
            common=CommonSettings.from_env(environ),
            host=read(environ, "TM_PHONE_HOST", _DEFAULTS["TM_PHONE_HOST"]),
            port=read(environ, "TM_PHONE_PORT", _DEFAULTS["TM_PHONE_PORT"], int),
            cti_token=token,
            default_region=region,
            blocked_numbers=parse_blocked(raw_blocked, region),
        )


def parse_blocked(raw: str, region: str) -> frozenset[str]:
    numbers = set()
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            number = normalize(item, region)
        except InvalidNumber as exc:
            raise ConfigError(f"TM_PHONE_BLOCKED_NUMBERS: {exc}") from None
        if number.kind == "hidden":
            raise ConfigError(f"TM_PHONE_BLOCKED_NUMBERS: {item!r} is not a number")
        numbers.add(number.value)
    return frozenset(numbers)
