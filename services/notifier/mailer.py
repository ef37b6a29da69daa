"""Hands finished mails to the SMTP relay (aiosmtplib) and sorts its failures.

A 4xx answer, a refused connection or a timeout will likely pass: :class:`TransientError`, the
event goes back to its queue and is tried again after a pause. A 5xx answer will not pass by
itself (bad address, relaying denied, login refused): :class:`NotificationRejected`, which the
consumer treats as a poison message and dead-letters with the server's answer, so ops can see
it and replay it once the cause is fixed.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from email.message import EmailMessage

import aiosmtplib

from shared.errors import TransientError
from shared.logging import mask


class NotificationRejected(Exception):
    """The SMTP server refused the mail for good (5xx)."""

    def __init__(self, code: int, reply: str):
        # The text becomes a dead letter's reason and log lines: servers quote the address.
        super().__init__(f"SMTP {code}: {mask(reply)}")
        self.code = code
        self.reply = reply


@dataclass(frozen=True)
class SmtpMailer:
    host: str
    port: int
    username: str = ""
    password: str = ""
    starttls: bool = False
    timeout: float = 10.0

    async def send(self, message: EmailMessage) -> None:
        try:
            await aiosmtplib.send(
                message, hostname=self.host, port=self.port, username=self.username or None,
                password=self.password or None, start_tls=self.starttls, use_tls=False, timeout=self.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refusal = exc.recipients[0]
            raise _classify(refusal.code, refusal.message) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise _classify(exc.code, exc.message) from exc
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
            # Connection refused or dropped, timeouts: the relay is away, not saying no.
            raise TransientError(f"SMTP relay {self.host}:{self.port} unavailable: {exc}") from exc


def _classify(code: int, reply: str) -> Exception:
    if 400 <= code < 500:
        return TransientError(f"SMTP {code}: {mask(reply)}")
    return NotificationRejected(code, reply)
