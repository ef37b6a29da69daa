"""Signed links a customer opens without logging in: the ticket status page and the CSAT survey.

The notifier writes them into mail; intake_chat serves the pages and checks them. Both share
``TM_CUSTOMER_LINK_SECRET`` and ``TM_CUSTOMER_BASE_URL`` (intake_chat's public address).

A token is ``<ticket>.<purpose>.<expires>.<sig>``: ``purpose`` is ``status`` or ``csat`` (a
survey link cannot open the status page and the other way round), ``expires`` epoch seconds in
base 36, ``sig`` the first 22 characters of the URL-safe base64 HMAC-SHA256 (132 bits) of the
other three parts. Without a valid token (or the ticket number plus the customer's address or
phone, checked by the page) no ticket is reachable. Pure: no I/O, time is passed in.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Mapping
from urllib.parse import quote

from shared.config import ConfigError, Variable

SECRET_VARIABLE = "TM_CUSTOMER_LINK_SECRET"
BASE_URL_VARIABLE = "TM_CUSTOMER_BASE_URL"
DEV_SECRET = "dev-only-customer-link-secret-change-me"
MIN_SECRET_CHARS = 16
VARIABLES = (
    Variable(SECRET_VARIABLE, None, "key that signs customers' status and survey links (same value for notifier "
             "and intake_chat; required in production, a dev default logs a warning)"),
    Variable(BASE_URL_VARIABLE, "http://127.0.0.1:8081", "public address of intake_chat, where customers open "
             "status pages and surveys"),
)
STATUS_TTL_SECONDS = 90 * 86400
CSAT_TTL_SECONDS = 30 * 86400
SIG_CHARS = 22

Purpose = Literal["status", "csat"]
PURPOSES: tuple[str, ...] = ("status", "csat")
PATHS: dict[str, str] = {"status": "/status/", "csat": "/csat/"}
_TOKEN = re.compile(r"^(TM-\d{1,18})\.(status|csat)\.([0-9a-z]{1,12})\.([A-Za-z0-9_-]{%d})$" % SIG_CHARS)


class LinkInvalid(ValueError):
    """A token that is malformed, forged, for another purpose, or expired (the reason says which)."""


@dataclass(frozen=True)
class Link:
    ticket_id: str
    purpose: str
    expires_at: int  # epoch seconds


def secret_from_env(environ: Mapping[str, str]) -> tuple[bytes, bool]:
    """``(secret, is_dev_default)``; a configured secret shorter than 16 characters is refused."""
    raw = environ.get(SECRET_VARIABLE, "")
    if not raw:
        return DEV_SECRET.encode(), True
    if len(raw) < MIN_SECRET_CHARS:
        raise ConfigError(f"{SECRET_VARIABLE} must be at least {MIN_SECRET_CHARS} characters")
    return raw.encode(), False


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if number == 0:
            return out


def _sig(secret: bytes, body: str) -> str:
    digest = hmac.new(secret, f"ticketmesh-customer-link:{body}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")[:SIG_CHARS]


def make_token(secret: bytes, ticket_id: str, purpose: Purpose, *, now: datetime, ttl_seconds: int | None = None) -> str:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown link purpose {purpose!r}")
    ttl = ttl_seconds if ttl_seconds is not None else (STATUS_TTL_SECONDS if purpose == "status" else CSAT_TTL_SECONDS)
    body = f"{ticket_id.upper()}.{purpose}.{_base36(int(now.timestamp()) + ttl)}"
    return f"{body}.{_sig(secret, body)}"


def read_token(secret: bytes, token: str, purpose: Purpose, *, now: datetime) -> Link:
    """The link a token names, or :class:`LinkInvalid` saying why not."""
    found = _TOKEN.match(token or "")
    if not found:
        raise LinkInvalid("malformed link")
    ticket_id, token_purpose, expires36, sig = found.groups()
    body = f"{ticket_id}.{token_purpose}.{expires36}"
    if not hmac.compare_digest(_sig(secret, body), sig):
        raise LinkInvalid("signature does not match")
    if token_purpose != purpose:
        raise LinkInvalid(f"a {token_purpose} link cannot open the {purpose} page")
    expires_at = int(expires36, 36)
    if now.timestamp() >= expires_at:
        raise LinkInvalid("link expired")
    return Link(ticket_id=ticket_id, purpose=token_purpose, expires_at=expires_at)


def url(base_url: str, secret: bytes, ticket_id: str, purpose: Purpose, *, now: datetime,
        ttl_seconds: int | None = None) -> str:
    """``https://help.example.com/status/TM-10001.status.<exp>.<sig>``"""
    token = make_token(secret, ticket_id, purpose, now=now, ttl_seconds=ttl_seconds)
    return f"{base_url.rstrip('/')}{PATHS[purpose]}{quote(token, safe='.-_')}"
