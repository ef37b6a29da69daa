"""Fixtures for the update tests: a notifier started with the test's own settings (real SMTP
sink, RabbitMQ vhost, Redis) and a clock the test sets. Imported by the test modules (the
sink, smtp_port and publish fixtures come from conftest.py)."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest

from devenv.smtp_sink import SmtpSink
from services.notifier.config import Settings
from services.notifier.service import NOTIFIER_KEY, Notifier, create_service
from services.notifier.tests.helpers import mails_to
from shared.aio_service import AioService
from shared.testing.asyncio_helpers import wait_until

REPO = Path(__file__).resolve().parents[4]
ROSTER = REPO / "deploy" / "demo" / "roster.yaml"
SLA_POLICIES = REPO / "deploy" / "config" / "sla.yaml"
LINK_SECRET = "customer-link-secret-for-tests"
BASE_URL = "https://help.example.com"
SUPERVISOR = "supervisors@ticketmesh.test"


class Clock:
    """The notifier's clock: the test moves it (``clock.now = ...``)."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


MakeNotifier = Callable[..., Awaitable[tuple[AioService, Notifier]]]


@pytest.fixture
async def make_notifier(amqp_uri, redis_url, smtp_port) -> Any:
    """``await make_notifier(clock, **env)`` → (service, notifier), stopped after the test;
    ``clock`` None keeps the real one."""
    started: list[AioService] = []

    async def make(clock: Clock | None, environ: dict[str, str] | None = None, **env: str) -> tuple[AioService, Notifier]:
        settings = Settings.from_env({
            "TM_AMQP_URI": amqp_uri, "TM_REDIS_URL": redis_url, "TM_PREFETCH": "1", "TM_NOTIFIER_PORT": "0",
            "TM_SMTP_PORT": str(smtp_port), "TM_SMTP_TIMEOUT": "3", "TM_ROSTER_FILE": str(ROSTER),
            "TM_SUPERVISOR_EMAIL": SUPERVISOR, "TM_SUPERVISOR_LANGUAGE": "en",
            "TM_SLA_POLICY_FILE": str(SLA_POLICIES), "TM_MAIL_TIMEZONE": "Asia/Shanghai",
            "TM_CUSTOMER_LINK_SECRET": LINK_SECRET, "TM_CUSTOMER_BASE_URL": BASE_URL,
            "TM_NOTIFY_ACK_WAIT_SECONDS": "60",  # long: the tests drive the sweeper with the clock
            **env,
        })
        service = create_service(settings, environ=environ or {})
        await service.start()
        started.append(service)
        notifier = service.app[NOTIFIER_KEY]
        if clock is not None:
            notifier.clock = clock
        return service, notifier

    yield make
    for service in started:
        await service.stop()


async def one_mail_to(sink: SmtpSink, address: str, what: str) -> Any:
    mails = await wait_until(lambda: mails_to(sink, address), message=what)
    assert len(mails) == 1, [m.subject for m in mails]
    return mails[0]
