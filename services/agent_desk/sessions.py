"""Session cookies, signed with HMAC-SHA256 (pure: the caller passes the secret and the time).

A cookie is ``<payload>.<signature>``, both base64url: the payload names the agent, a session
id and when it was issued. The signature lets a replica reject a forged or edited cookie
without a Redis round trip; the session id is then looked up in Redis, so logging out ends
the session everywhere, not just in one browser.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timezone

COOKIE_NAME = "tm_desk_session"


@dataclass(frozen=True)
class Session:
    agent_id: str
    session_id: str
    issued_at: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(payload: str, secret: str) -> str:
    return _b64(hmac.new(secret.encode(), payload.encode("ascii"), hashlib.sha256).digest())


def sign_session(session: Session, secret: str) -> str:
    payload = _b64(json.dumps(
        {"a": session.agent_id, "s": session.session_id, "t": int(session.issued_at.timestamp())},
        separators=(",", ":"),
    ).encode())
    return f"{payload}.{_signature(payload, secret)}"


def verify_session(cookie: str | None, secret: str, *, now: datetime, max_age_seconds: int) -> Session | None:
    """The session in a cookie we signed and that has not expired; None for anything else."""
    if not cookie or cookie.count(".") != 1 or len(cookie) > 1024:
        return None
    payload, signature = cookie.split(".")
    try:
        if not hmac.compare_digest(signature, _signature(payload, secret)):
            return None
        data = json.loads(_unb64(payload))
        session = Session(agent_id=str(data["a"]), session_id=str(data["s"]),
                          issued_at=datetime.fromtimestamp(int(data["t"]), timezone.utc))
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeEncodeError):
        return None
    age = (now - session.issued_at).total_seconds()
    if age < -60 or age > max_age_seconds:  # a minute of clock skew between replicas is fine
        return None
    return session
