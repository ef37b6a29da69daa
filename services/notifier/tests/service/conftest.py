"""Fixtures of the notifier's service tests: a real SMTP sink, the notifier on this test's
RabbitMQ vhost and Redis database (helpers for reading what it did: tests/helpers.py)."""
from __future__ import annotations

import pytest

from devenv.smtp_sink import SmtpSink
from services.notifier.service import create_service
from services.notifier.tests.helpers import notifier_settings
from shared.testing.asyncio_helpers import free_port


@pytest.fixture
def smtp_port() -> int:
    return free_port()


@pytest.fixture
async def sink(tmp_path, smtp_port):
    sink = SmtpSink(tmp_path / "outbox", smtp_port=smtp_port)
    yield sink
    await sink.stop()


@pytest.fixture
def notifier_env() -> dict[str, str]:
    """Extra settings for the ``notifier`` fixture (a test module overrides this fixture)."""
    return {}


@pytest.fixture
async def notifier(amqp_uri, redis_url, smtp_port, notifier_env):
    service = create_service(notifier_settings(amqp_uri, redis_url, smtp_port, **notifier_env))
    await service.start()
    yield service
    await service.stop()


@pytest.fixture
def publish(publish_event):
    return publish_event
