"""Who a chat visitor is (pure: no I/O).

Two kinds of visitor, and neither can pick another's id:

- **anonymous**: the widget keeps a random *session secret* (``session``, 32 random hex characters
  in localStorage) and sends it in ``hello``; the visitor id is a hash of it
  (``v_`` + 32 hex). Ids appear in events and logs, secrets never do, so knowing a visitor's id
  does not open their conversation: only the browser holding the secret sees it.
- **verified**: a logged-in user of the company's site. The site's server computes
  ``user_hash = hex(HMAC-SHA256(site secret, user_id))`` and renders it with the widget tag;
  the widget sends ``site``, ``user_id`` and ``user_hash``. If the hash matches that site's
  secret (``TM_CHAT_IDENTITY_SECRETS``), the visitor id is stable for that user on every device
  (``u_`` + hash of site and user id); if it does not, the hello is refused (never silently
  downgraded, so a site's integration mistake shows at once).
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Mapping


class IdentityRefused(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Identity:
    visitor_id: str
    verified: bool
    site: str = ""
    user_id: str = ""


def session_visitor_id(session: str) -> str:
    return "v_" + hashlib.sha256(b"ticketmesh-chat-session\0" + session.encode()).hexdigest()[:32]


def verified_visitor_id(site: str, user_id: str) -> str:
    return "u_" + hashlib.sha256(f"ticketmesh-chat-user\0{site}\0{user_id}".encode()).hexdigest()[:32]


def user_hash(secret: bytes, user_id: str) -> str:
    """What the company's server computes for its logged-in user (documented for integrators)."""
    return hmac.new(secret, user_id.encode("utf-8"), hashlib.sha256).hexdigest()


def anonymous(session: str) -> Identity:
    return Identity(session_visitor_id(session), verified=False)


def verify(secrets: Mapping[str, bytes], site: str, user_id: str, given_hash: str) -> Identity:
    secret = secrets.get(site)
    if secret is None:
        raise IdentityRefused("unknown_site", "this site has no identity secret configured")
    if not hmac.compare_digest(user_hash(secret, user_id), given_hash.strip().lower()):
        raise IdentityRefused("identity_not_verified", "user_hash does not match user_id for this site")
    return Identity(verified_visitor_id(site, user_id), verified=True, site=site, user_id=user_id)
