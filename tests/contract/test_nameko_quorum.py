"""TM_QUEUE_TYPE=quorum on the nameko runtime, against the real RabbitMQ: nameko_config carries
the queue arguments, handler queues and the dead-letter queue are declared as quorum queues,
and RabbitMQ dead-letters a message that keeps being requeued once the delivery limit is hit."""
from datetime import datetime, timezone

from nameko.standalone.events import event_dispatcher

from shared import events as ev
from shared import nameko_ext
from shared.config import CommonSettings
from shared.errors import TransientError
from shared.nameko_ext import event_consumer, nameko_config
from shared.topology import DEAD_LETTER_QUEUE, handler_queue_name
from tests.deploy.queue_checks import queue_info, wait_for_dead_letters

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=timezone.utc)
QUEUE = handler_queue_name("intake_phone", "ticket_received", "dispatcher", "handle_phone_ticket_received")


class AlwaysAwayService:
    name = "dispatcher"
    attempts: list = []

    @event_consumer("intake_phone", "ticket_received")
    def handle_phone_ticket_received(self, event):
        AlwaysAwayService.attempts.append(event.ticket_id)
        raise TransientError("redis away for good")


def test_quorum_handler_queue_dead_letters_after_the_delivery_limit(service_container, amqp_uri, monkeypatch):
    monkeypatch.setattr(nameko_ext, "TRANSIENT_RETRY_PAUSE_SECONDS", 0.0)
    AlwaysAwayService.attempts.clear()
    settings = CommonSettings.from_env({"TM_AMQP_URI": amqp_uri, "TM_QUEUE_TYPE": "quorum",
                                        "TM_QUEUE_DELIVERY_LIMIT": "2"})
    config = nameko_config(settings)
    container = service_container(AlwaysAwayService, **{k: config[k] for k in (
        nameko_ext.QUEUE_ARGUMENTS_KEY, nameko_ext.DEAD_LETTER_QUEUE_ARGUMENTS_KEY)})
    container.start()
    body = ev.make_event("intake_phone", "ticket_received", now=NOW, trace_id="trace-q", ticket_id="TM-20001",
                         channel="phone", customer={"name": "", "phone": "+8613812345678"}, subject="Missed call",
                         text="Missed call", received_at=NOW)
    event_dispatcher({"AMQP_URI": amqp_uri})("intake_phone", "ticket_received", body)
    [letter] = wait_for_dead_letters(amqp_uri, 1)
    container.stop()

    info = queue_info(amqp_uri, QUEUE)
    assert info["type"] == "quorum"
    assert info["arguments"]["x-delivery-limit"] == 2
    assert info["arguments"]["x-dead-letter-exchange"] == "ticketmesh.dead_letters"
    assert queue_info(amqp_uri, DEAD_LETTER_QUEUE)["type"] == "quorum"
    assert letter.reason.startswith("rabbitmq: delivery_limit")
    assert (letter.queue, letter.routing_key) == (QUEUE, "ticket_received")
    assert AlwaysAwayService.attempts == ["TM-20001"] * 3


def test_classic_default_leaves_nameko_queues_as_they_were(service_container, amqp_uri):
    config = nameko_config(CommonSettings.from_env({"TM_AMQP_URI": amqp_uri}))
    assert config[nameko_ext.QUEUE_ARGUMENTS_KEY] == {}
    container = service_container(AlwaysAwayService, **{nameko_ext.QUEUE_ARGUMENTS_KEY: config[nameko_ext.QUEUE_ARGUMENTS_KEY]})
    container.start()
    container.stop()
    info = queue_info(amqp_uri, QUEUE)
    assert info["type"] == "classic" and info["arguments"] == {}
