"""intake_phone settings: the common ones plus the CTI endpoint's and the phone policy file."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from shared.config import CommonSettings, ConfigError, Variable, read

from services.intake_phone.phone_numbers import InvalidNumber, normalize
from services.intake_phone.policy import PhonePolicy, PhonePolicyError, load_policy

DEFAULT_POLICY_FILE = "deploy/config/phone.yaml"
VARIABLES = (
    Variable("TM_PHONE_HOST", "127.0.0.1", "address the CTI webhook listens on"),
    Variable("TM_PHONE_PORT", "8082", "port of the CTI webhook"),
    Variable("TM_CTI_TOKEN", None, "secret in the webhook URL /api/v1/cti/<token> (required)"),
    Variable("TM_PHONE_DEFAULT_REGION", "CN", "region for numbers dialled without a country code (ISO 3166)"),
    Variable("TM_PHONE_BLOCKED_NUMBERS", "", "comma-separated caller ids to reject as busy"),
    Variable("TM_PHONE_POLICY_FILE", DEFAULT_POLICY_FILE,
             "what missed, voicemail and answered calls become, per line/queue (YAML; re-read when it changes)"),
)
_DEFAULTS = {v.name: v.default for v in VARIABLES}
TOKEN_MIN_CHARS = 16


@dataclass(frozen=True)
class CallSettings:
    """What turning calls into tickets needs: the webhook and ``ticketmesh phone import-cdr`` alike."""

    common: CommonSettings
    default_region: str
    blocked_numbers: frozenset[str]
    policy_file: str
    policy: PhonePolicy  # as read at start; the webhook re-reads the file when it changes

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, *, policy_file: str | None = None) -> "CallSettings":
        region = read(environ, "TM_PHONE_DEFAULT_REGION", _DEFAULTS["TM_PHONE_DEFAULT_REGION"], str.upper)
        path = policy_file or read(environ, "TM_PHONE_POLICY_FILE", DEFAULT_POLICY_FILE)
        try:
            policy = load_policy(path, default_region=region)
        except PhonePolicyError as exc:
            raise ConfigError(f"TM_PHONE_POLICY_FILE: {exc}") from None
        return cls(
            common=CommonSettings.from_env(environ),
            default_region=region,
            blocked_numbers=parse_blocked(read(environ, "TM_PHONE_BLOCKED_NUMBERS", ""), region),
            policy_file=path,
            policy=policy,
        )


@dataclass(frozen=True)
class Settings:
    calls: CallSettings
    host: str
    port: int
    cti_token: str

    @property
    def common(self) -> CommonSettings:
        return self.calls.common

    @property
    def default_region(self) -> str:
        return self.calls.default_region

    @property
    def blocked_numbers(self) -> frozenset[str]:
        return self.calls.blocked_numbers

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        token = read(environ, "TM_CTI_TOKEN", None)
        if len(token) < TOKEN_MIN_CHARS:
            raise ConfigError(f"TM_CTI_TOKEN must be at least {TOKEN_MIN_CHARS} characters")
        return cls(
            calls=CallSettings.from_env(environ),
            host=read(environ, "TM_PHONE_HOST", _DEFAULTS["TM_PHONE_HOST"]),
            port=read(environ, "TM_PHONE_PORT", _DEFAULTS["TM_PHONE_PORT"], int),
            cti_token=token,
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
