import eventlet

eventlet.monkey_patch()  # nameko containers in this folder; asyncio tests run in another process

pytest_plugins = ["shared.testing.plugin"]


import pytest  # noqa: E402
from nameko.standalone.events import event_dispatcher  # noqa: E402

from services.dispatcher.store import DispatchStore  # noqa: E402


@pytest.fixture
def publish(amqp_uri):
    """``publish(source, event_type, body)`` as that service would."""
    dispatch = event_dispatcher({"AMQP_URI": amqp_uri})

    def send(source, event_type, body):
        dispatch(source, event_type, body)

    return send


@pytest.fixture
def store(redis_client):
    return DispatchStore(redis_client)


@pytest.fixture
def round_trips(monkeypatch):
    """Commands (or pipelines) sent to Redis, counted as they are written."""
    from redis.connection import AbstractConnection

    sent = []
    original = AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):
        sent.append(command)
        return original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return sent
