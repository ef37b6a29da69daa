"""Both runtimes on one bus: aio-pika publishers reach nameko handlers and the other way round,
and a dead letter replayed with the CLI's replay reaches the handler it failed in."""
import json
import subprocess
import sys
import textwrap
from datetime import datetime, timezone

from nameko.testing.services import entrypoint_waiter

from shared import events as ev
from shared.dead_letter_ops import list_dead_letters, replay_dead_letters
from shared.nameko_ext import Emitter, LogContext, event_consumer

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=timezone.utc)


class PhoneTicketsService:
    name = "dispatcher"
    emit = Emitter()
    log_context = LogContext()
    received: list = []
    fail_next = False

    @event_consumer("intake_phone", "ticket_received")
    def handle_phone_ticket_received(self, event):
        if PhoneTicketsService.fail_next:
            PhoneTicketsService.fail_next = False
            raise RuntimeError("not today")
        PhoneTicketsService.received.append(event)
        self.emit("ticket_queued", now=NOW, trace_id=event.trace_id, ticket_id=event.ticket_id,
                  channel="phone", priority="P2", required_skills=["general"], reason="test")


class AuditService:
    """A second consumer of the same event: a replay must not reach it again."""
    name = "sla_watcher"
    seen: list = []

    @event_consumer("intake_phone", "ticket_received")
    def audit_phone_ticket_received(self, event):
        AuditService.seen.append(event.ticket_id)


ASYNC_PUBLISH = textwrap.dedent("""
    import asyncio, sys
    from datetime import datetime, timezone
    from shared.amqp import EventPublisher, connect

    async def main(uri):
        conn = await connect(uri, name="interop-test")
        publisher = EventPublisher(conn, "intake_phone")
        await publisher.start()
        now = datetime.now(timezone.utc)
        await publisher.emit("ticket_received", now=now, trace_id="trace-async", ticket_id="TM-20001",
                             channel="phone", customer={"phone": "+8613912345678"}, subject="Missed call",
                             text="Missed call", received_at=now)
        await conn.close()

    asyncio.run(main(sys.argv[1]))
""")

ASYNC_CONSUME = textwrap.dedent("""
    import asyncio, json, sys
    from shared.amqp import EventConsumer, connect
    from shared.logging import configure_logging

    async def main(uri):
        configure_logging("interop-test")
        conn = await connect(uri, name="interop-test")
        got = asyncio.get_running_loop().create_future()

        async def on_queued(event):
            if not got.done():
                got.set_result(event)

        consumer = EventConsumer(conn, "agent_desk", "test-replica")
        consumer.subscribe("dispatcher", "ticket_queued", "store_ticket_queued", on_queued)
        await consumer.start()
        print("ready", flush=True)
        event = await asyncio.wait_for(got, 20)
        print(json.dumps({"ticket_id": event.ticket_id, "trace_id": event.trace_id}), flush=True)
        await consumer.stop()
        await conn.close()

    asyncio.run(main(sys.argv[1]))
""")


def test_asyncio_publisher_reaches_nameko_handler(service_container, amqp_uri):
    PhoneTicketsService.received.clear()
    container = service_container(PhoneTicketsService)
    container.start()
    with entrypoint_waiter(container, "handle_phone_ticket_received", timeout=20):
        subprocess.run([sys.executable, "-c", ASYNC_PUBLISH, amqp_uri], check=True, timeout=30)
    [event] = PhoneTicketsService.received
    assert (event.ticket_id, event.trace_id, event.customer.phone) == ("TM-20001", "trace-async", "+8613912345678")


def test_nameko_emitter_reaches_asyncio_consumer(service_container, amqp_uri):
    from nameko.standalone.events import event_dispatcher

    PhoneTicketsService.received.clear()
    container = service_container(PhoneTicketsService)
    container.start()
    consumer = subprocess.Popen([sys.executable, "-c", ASYNC_CONSUME, amqp_uri], stdout=subprocess.PIPE, text=True)
    try:
        assert consumer.stdout.readline().strip() == "ready"
        body = ev.make_event("intake_phone", "ticket_received", now=NOW, trace_id="trace-n", ticket_id="TM-20002",
                             channel="phone", customer={}, subject="s", text="t", received_at=NOW)
        event_dispatcher({"AMQP_URI": amqp_uri})("intake_phone", "ticket_received", body)
        line = consumer.stdout.readline()
        assert json.loads(line) == {"ticket_id": "TM-20002", "trace_id": "trace-n"}
        assert consumer.wait(timeout=20) == 0
    finally:
        consumer.kill()


def test_replayed_dead_letter_reaches_only_the_handler_it_failed_in(service_container, amqp_uri):
    from nameko.standalone.events import event_dispatcher

    PhoneTicketsService.received.clear()
    PhoneTicketsService.fail_next = True
    AuditService.seen.clear()
    container = service_container(PhoneTicketsService)
    container.start()
    audit = service_container(AuditService)
    audit.start()
    body = ev.make_event("intake_phone", "ticket_received", now=NOW, trace_id="trace-r", ticket_id="TM-20003",
                         channel="phone", customer={}, subject="s", text="t", received_at=NOW)
    with entrypoint_waiter(container, "handle_phone_ticket_received", timeout=10), \
            entrypoint_waiter(audit, "audit_phone_ticket_received", timeout=10):
        event_dispatcher({"AMQP_URI": amqp_uri})("intake_phone", "ticket_received", body)
    assert PhoneTicketsService.received == []
    [letter] = list_dead_letters(amqp_uri)
    assert "not today" in letter.reason and letter.routing_key == "ticket_received"
    assert len(list_dead_letters(amqp_uri)) == 1  # listing leaves it in place
    with entrypoint_waiter(container, "handle_phone_ticket_received", timeout=10):
        assert [d.routing_key for d in replay_dead_letters(amqp_uri)] == ["ticket_received"]
    assert [e.ticket_id for e in PhoneTicketsService.received] == ["TM-20003"]
    assert list_dead_letters(amqp_uri) == []
    # The audit consumer handled the original; the replay went to the failed queue only. A
    # fresh event proves the audit is still consuming, so nothing replayed is merely late.
    with entrypoint_waiter(audit, "audit_phone_ticket_received", timeout=10):
        event_dispatcher({"AMQP_URI": amqp_uri})("intake_phone", "ticket_received",
                                                 {**body, "event_id": "e-next", "ticket_id": "TM-20004"})
    assert AuditService.seen == ["TM-20003", "TM-20004"]
