"""What to do after an SMTP attempt failed (pure: no I/O, no clock; randomness passed in).

- No answer at all (connection refused or dropped, a timeout, a TLS failure) or a 4xx answer:
  the relay will likely take the mail later → **retry**, after :func:`retry_delay`.
- A 5xx answer to RCPT about the mailbox (enhanced status ``5.1.x`` bad address, ``5.2.x``
  mailbox disabled or full; or a bare 550/551/553 without an enhanced status): the *address*
  is bad → **refused_address**: the notification stops and the address is suppressed like a
  hard bounce (60 days), so nothing else is sent to it.
- Any other 5xx (``5.7.1`` relaying denied or policy at RCPT, a refused sender, AUTH failed,
  content refused after DATA): the relay said no for a reason that is ours, not the address's
  → **refused**: the notification stops (a dead letter to replay once the cause is fixed) and
  no address is blamed. A relay misconfigured to refuse everyone must not suppress every
  customer for 60 days.

Backoff is exponential with full jitter (AWS Architecture Blog, "Exponential Backoff And
Jitter"): attempt *n* waits a uniform random time in ``[0, min(cap, base · 2^(n-1))]``, so many
mails deferred by one relay outage do not all come back in the same second.
"""
from __future__ import annotations

import re
from typing import Callable

RETRY = "retry"
REFUSED = "refused"
REFUSED_ADDRESS = "refused_address"

# Where in the SMTP conversation a failure happened.
CONNECT, TLS, AUTH, MAIL, RCPT, DATA = "connect", "tls", "auth", "mail", "rcpt", "data"

_ENHANCED_STATUS = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_ADDRESS_CODES_WITHOUT_ENHANCED = {550, 551, 553}


class SmtpFailure(Exception):
    """An SMTP attempt that did not end with the relay accepting the mail.

    ``code`` is None when the relay gave no answer (refused connection, timeout, dropped link).
    ``maybe_delivered``: the failure came after the whole message was written and before its
    answer arrived, so the relay may have accepted it (the one window where a retry can
    deliver a second copy).
    """

    def __init__(self, stage: str, code: int | None, reply: str, *, maybe_delivered: bool = False):
        super().__init__(stage, code, reply)
        self.stage = stage
        self.code = code
        self.reply = reply
        self.maybe_delivered = maybe_delivered

    def __str__(self) -> str:
        answer = f"SMTP {self.code} {self.reply}" if self.code is not None else (self.reply or "no answer")
        return f"{self.stage}: {answer}"[:500]


def verdict(failure: SmtpFailure) -> str:
    """``retry``, ``refused_address`` or ``refused`` (see the module docstring)."""
    if failure.code is None or failure.code < 500:
        return RETRY
    if failure.stage == RCPT and _blames_address(failure.code, failure.reply):
        return REFUSED_ADDRESS
    return REFUSED


def _blames_address(code: int, reply: str) -> bool:
    enhanced = _ENHANCED_STATUS.match(reply)
    if enhanced:
        return enhanced.group(1) == "5" and enhanced.group(2) in ("1", "2")
    return code in _ADDRESS_CODES_WITHOUT_ENHANCED


def retry_delay(attempt: int, *, base: float, cap: float, random: Callable[[], float]) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1 = the first): full jitter."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return ceiling * random()
