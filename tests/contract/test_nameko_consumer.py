"""The nameko half of the contract: validated handlers, dead letters, emitted bodies."""
from datetime import datetime, timezone

from nameko.standalone.events import event_dispatcher
from nameko.testing.services import entrypoint_waiter

from shared import events as ev
from shared.nameko_ext import Emitter, LogContext, event_consumer
from shared.testing.plugin import dead_letters

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=timezone.utc)


def ticket_received_body(**overrides):
    fields = dict(
        ticket_id="TM-10001", channel="phone", customer={"name": "", "phone": "+8613812345678"},
        subject="Missed call", text="Missed call from +8613812345678", received_at=NOW,
    )
    fields.update(overrides)
    return ev.make_event("intake_phone", "ticket_received", now=NOW, trace_id="trace-1", **fields)


class EchoService:
    name = "dispatcher"
    emit = Emitter()
    log_context = LogContext()
    seen: list = []

    @event_consumer("intake_phone", "ticket_received")
    def handle_phone_ticket_received(self, event):
        if event.subject == "boom":
            raise RuntimeError("handler exploded")
        EchoService.seen.append(event)
        self.emit("ticket_queued", now=NOW, trace_id=event.trace_id, ticket_id=event.ticket_id,
                  channel=event.channel, priority="P3", required_skills=["general"], reason="no agent")


def test_valid_event_reaches_handler_as_model_and_emit_validates(service_container, amqp_uri, event_listener):
    EchoService.seen.clear()
    container = service_container(EchoService)
    container.start()
    listener = event_listener("dispatcher", ["ticket_queued"])
    with entrypoint_waiter(container, "handle_phone_ticket_received", timeout=10):
        event_dispatcher({"AMQP_URI": amqp_uri})("intake_phone", "ticket_received", ticket_received_body())
    assert isinstance(EchoService.seen[0], ev.TicketReceived)
    assert EchoService.seen[0].customer.phone == "+8613812345678"
    _, body = listener.wait_for(lambda t, b: b["ticket_id"] == "TM-10001")
    assert body["trace_id"] == "trace-1" and body["schema_version"] == 1


def test_invalid_event_is_dead_lettered_with_reason_and_next_one_still_processed(service_container, amqp_uri):
    EchoService.seen.clear()
    container = service_container(EchoService)
    container.start()
    dispatch = event_dispatcher({"AMQP_URI": amqp_uri})
    bad = ticket_received_body()
    del bad["channel"]
    dispatch("intake_phone", "ticket_received", bad)
    with entrypoint_waiter(container, "handle_phone_ticket_received", timeout=10):
        dispatch("intake_phone", "ticket_received", ticket_received_body(ticket_id="TM-10002"))
    assert [e.ticket_id for e in EchoService.seen] == ["TM-10002"]
    [(headers, raw)] = dead_letters(amqp_uri)
    assert "channel: Field required" in headers["x-tm-dead-reason"]
    assert headers["x-tm-failed-queue"] == "evt-intake_phone-ticket_received--dispatcher.handle_phone_ticket_received"
    assert b"TM-10001" in raw


def test_handler_failure_is_dead_lettered_not_requeued_forever(service_container, amqp_uri):
    EchoService.seen.clear()
    container = service_container(EchoService)
    container.start()
    with entrypoint_waiter(container, "handle_phone_ticket_received", timeout=10):
        event_dispatcher({"AMQP_URI": amqp_uri})("intake_phone", "ticket_received", ticket_received_body(subject="boom"))
    [(headers, _raw)] = dead_letters(amqp_uri)
    assert "handler exploded" in headers["x-tm-dead-reason"]
