"""Hands rendered mail to the SMTP relay (aiosmtplib), one step at a time.

Each of the notifier's senders holds one :class:`SmtpSession`: a connection to the relay,
secured as configured (plain, STARTTLS, or TLS from the start; certificates are always
verified, against ``TM_SMTP_CA_FILE`` for a private relay), logged in when a user is set,
and reused for the next mail while it is younger than :data:`IDLE_SECONDS` (a new TLS
handshake and login per mail would cost more than the mail).

:meth:`SmtpSession.send` runs MAIL, RCPT, then calls ``before_data`` (the outbox records that
the mail is being sent, and checks this sender still holds it), then DATA. It returns the
relay's answer to DATA, or raises :class:`~services.notifier.delivery_policy.SmtpFailure`
saying at which stage the relay said what (or nothing), or :class:`LeaseLost` when
``before_data`` says another notifier took the mail over (nothing was sent).
"""
from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import aiosmtplib

from services.notifier.config import STARTTLS, TLS
from services.notifier.delivery_policy import AUTH, CONNECT, DATA, MAIL, RCPT, SmtpFailure
from services.notifier.delivery_policy import TLS as TLS_STAGE

# A relay drops a quiet connection after a while (Postfix: 300 s); well before that, open a new one.
IDLE_SECONDS = 30.0


class LeaseLost(Exception):
    """Another notifier holds the mail now; this one sent nothing and leaves it alone."""


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    username: str = ""
    password: str = field(default="", repr=False)
    tls: str = "plain"          # plain, starttls or tls (config.PLAIN / STARTTLS / TLS)
    ca_file: str = ""
    timeout: float = 10.0

    def tls_context(self) -> ssl.SSLContext | None:
        if self.tls not in (STARTTLS, TLS):
            return None
        return ssl.create_default_context(cafile=self.ca_file or None)


class SmtpSession:
    """One sender's connection to the relay; not shared between concurrent sends."""

    def __init__(self, config: SmtpConfig, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self._clock = clock
        self._smtp: aiosmtplib.SMTP | None = None
        self._last_used = 0.0
        self._context = config.tls_context()

    @property
    def connected(self) -> bool:
        return self._smtp is not None and self._smtp.is_connected

    async def send(self, sender: str, recipient: str, raw: bytes, *, utf8: bool = False,
                   before_data: Callable[[], Awaitable[bool]]) -> str:
        reused = self.connected and self._clock() - self._last_used < IDLE_SECONDS
        if not reused:
            await self.close()
        try:
            return await self._transaction(sender, recipient, raw, utf8, before_data, reconnect=not reused)
        except SmtpFailure as failure:
            if reused and failure.stage == MAIL and failure.code is None:
                # The relay had closed our idle connection: that says nothing about this mail.
                await self.close()
                return await self._transaction(sender, recipient, raw, utf8, before_data, reconnect=True)
            raise
        finally:
            self._last_used = self._clock()

    async def _transaction(self, sender: str, recipient: str, raw: bytes, utf8: bool,
                           before_data: Callable[[], Awaitable[bool]], *, reconnect: bool) -> str:
        config = self.config
        stage = CONNECT
        try:
            if reconnect:
                self._smtp = aiosmtplib.SMTP(
                    hostname=config.host, port=config.port, timeout=config.timeout, use_tls=config.tls == TLS,
                    start_tls=False, tls_context=self._context if config.tls == TLS else None,
                )
                await self._smtp.connect()
                await self._smtp.ehlo()
                if config.tls == STARTTLS:
                    stage = TLS_STAGE
                    await self._smtp.starttls(tls_context=self._context)
                if config.username:
                    stage = AUTH
                    await self._smtp.login(config.username, config.password)
            assert self._smtp is not None
            encoding = "utf-8" if utf8 else "ascii"
            stage = MAIL
            await self._smtp.mail(sender, options=["SMTPUTF8"] if utf8 else [], encoding=encoding)
            stage = RCPT
            await self._smtp.rcpt(recipient, encoding=encoding)
            if not await before_data():
                await self._reset()
                raise LeaseLost()
            stage = DATA
            response = await self._smtp.data(raw)
            return response.message
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code == 421 or stage in (CONNECT, TLS_STAGE, AUTH):
                await self.close()  # 421: the relay is closing the channel
            else:
                await self._reset()
            raise SmtpFailure(stage, exc.code, exc.message) from exc
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            await self.close()
            # Everything was written and no answer came: the relay may have taken it.
            raise SmtpFailure(stage, None, f"{type(exc).__name__}: {exc}", maybe_delivered=stage == DATA) from exc

    async def _reset(self) -> None:
        """RSET after a refusal, so the connection can carry the next mail."""
        if self._smtp is None or not self._smtp.is_connected:
            return
        try:
            await self._smtp.rset()
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
            await self.close()

    async def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None or not smtp.is_connected:
            return
        try:
            await asyncio.wait_for(smtp.quit(), self.config.timeout)
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
            smtp.close()
