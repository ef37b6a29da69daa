"""Abuse controls: who is refused outright, and how often anyone may do what.

- **Blocked addresses** (``TM_CHAT_BLOCKED_IPS``, addresses or CIDR networks) get 403 on every
  page, upload and WebSocket.
- **Rate limits** (``TM_CHAT_RATE_LIMITS``) are fixed windows counted in Redis, so they hold
  across replicas: per address (connections, messages, new conversations) and per visitor
  (messages, uploads, transcript mails). Zammad's web form allows 20 new tickets an hour per
  address; chat customers share addresses more often (offices, carrier NAT), so the default
  per address is 60 new conversations an hour and the per-visitor limits do the fine work. A
  limited message is refused with ``rate_limited`` and ``retry_after`` seconds, and nothing of it
  is written.
- The visitor's address is the socket's peer, or the last ``X-Forwarded-For`` hop when the peer
  is a trusted proxy (``TM_CHAT_TRUSTED_PROXIES``); a forwarded header from anyone else is ignored,
  or anybody could pick the address they are limited under.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from services.intake_chat.config import Network, RateLimit
from services.intake_chat.store import ChatStore


class RateLimited(Exception):
    def __init__(self, limit_name: str, retry_after: int):
        super().__init__(f"{limit_name} limit reached")
        self.limit_name = limit_name
        self.retry_after = retry_after


def _address(raw: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address((raw or "").strip())
    except ValueError:
        return None


def _inside(address, networks: tuple[Network, ...]) -> bool:
    return address is not None and any(address.version == n.version and address in n for n in networks)


def client_address(peer: str | None, forwarded_for: str | None, trusted_proxies: tuple[Network, ...]) -> str:
    """The visitor's address as text ('unknown' when there is none, e.g. a Unix socket)."""
    address = _address(peer)
    if address is not None and forwarded_for and _inside(address, trusted_proxies):
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        # The rightmost hop not itself a trusted proxy is the one the proxies vouch for.
        for hop in reversed(hops):
            hop_address = _address(hop)
            if hop_address is None:
                break
            address = hop_address
            if not _inside(hop_address, trusted_proxies):
                break
    return str(address) if address is not None else "unknown"


def is_blocked(address: str, blocked: tuple[Network, ...]) -> bool:
    return _inside(_address(address), blocked)


@dataclass
class Limiter:
    store: ChatStore
    limits: dict[str, RateLimit]

    def applies(self, limit_name: str) -> bool:
        """Whether ``limit_name`` is in force (a count of 0 turns it off)."""
        limit = self.limits.get(limit_name)
        return limit is not None and limit.count != 0

    async def check(self, limit_name: str, subject: str, now: float) -> None:
        """Count one use; RateLimited when it is over the window's allowance."""
        if not self.applies(limit_name):
            return
        limit = self.limits[limit_name]
        used = await self.store.count(limit_name, subject, limit.seconds, now)
        if used > limit.count:
            raise RateLimited(limit_name, int(limit.seconds - now % limit.seconds) + 1)
