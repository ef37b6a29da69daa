"""kill -9 a real notifier process in the middle of sending, restart it, count what arrived.

Each case runs ``python -m services.notifier`` with its SMTP or its Redis connection through a
``HoldProxy`` that freezes the link at one point of the send; the test kills the process with
SIGKILL while it waits there, releases the link (the relay sees its client vanish), starts a
fresh notifier without proxies and waits until the mail's outcome is announced. The relay
(aiosmtpd) commits a message before answering 250, as real MTAs do, and counts copies by
Message-ID.

The guarantee tested (delivery.py's docstring): exactly one copy, and exactly one
``notification_sent``, for a kill at every point except the window between the relay's commit
and the ``sent`` record in Redis; there, exactly two copies, byte-identical (same Message-ID).
Never none. The restarted notifier picks a mail left ``sending`` up when the dead one's lease
(``TM_NOTIFIER_LEASE_SECONDS``) runs out.
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aio_pika
import pytest

from devenv.process import spawn_logged, stop_processes
from services.notifier import messages
from services.notifier.tests.factories import ticket_received
from services.notifier.tests.helpers import ROSTER, outbox_record
from services.notifier.tests.smtp_doubles import HoldProxy, ScriptedSmtp
from shared import events as ev
from shared.testing.asyncio_helpers import wait_until
from shared.testing.plugin import AsyncEventListener
from shared.topology import handler_queue_name

REPO = Path(__file__).resolve().parents[4]
ACK_QUEUE = handler_queue_name(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, ev.NOTIFIER, "ack_email_ticket_received")
# The killed notifier's lease: how long its restarted successor waits before taking a mail over.
LEASE_SECONDS = "5"
SMTP_TIMEOUT = "2"

SMTP, REDIS = "smtp", "redis"
# point: (which link, pattern, direction, what passes, copies the relay ends up with)
POINTS = {
    # The event was taken from the queue; the outbox write never reached Redis: the event is redelivered.
    "before_the_outbox_write": (REDIS, b"$6\r\nqueued\r\n", "up", "none", 1),
    # Connected and greeted; MAIL FROM never reached the relay.
    "before_mail_from": (SMTP, b"MAIL FROM", "up", "none", 1),
    # RCPT accepted and "sending" recorded; the DATA command never reached the relay.
    "sending_recorded_before_data": (SMTP, b"DATA\r\n", "up", "none", 1),
    # The whole message reached the relay but its final "." did not: the relay discards it.
    "message_written_but_not_ended": (SMTP, b"\r\n.\r\n", "up", "before", 1),
    # The window: the relay committed the message; its 250 never reached us.
    "relay_committed_before_its_250_arrived": (SMTP, b"250 2.0.0 Accepted", "down", "none", 2),
    # The window: the 250 arrived; "sent" never reached Redis.
    "250_received_before_sent_was_recorded": (REDIS, b"$4\r\nsent\r\n", "up", "none", 2),
    # "sent" is in Redis; the announcement (notification_sent) was not published yet.
    "sent_recorded_before_the_announcement": (REDIS, b"$4\r\nsent\r\n", "up", "all", 1),
}


class NotifierProcess:
    def __init__(self, env: dict[str, str], log_path: Path):
        self.env, self.log_path = env, log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> "NotifierProcess":
        self.proc = spawn_logged([sys.executable, "-m", "services.notifier"], self.log_path, env=self.env, cwd=REPO)
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            stop_processes([self.proc], 30)


@pytest.fixture
async def relay(smtp_port):
    server = await ScriptedSmtp(smtp_port).start()
    yield server
    await server.stop()


@pytest.fixture
async def ack_queue(amqp_uri):
    """Declared before any notifier runs, so an event published now waits for one."""
    connection = await aio_pika.connect(amqp_uri)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(ev.exchange_name(ev.INTAKE_EMAIL), aio_pika.ExchangeType.TOPIC,
                                              durable=True)
    queue = await channel.declare_queue(ACK_QUEUE, durable=True)
    await queue.bind(exchange, routing_key=ev.TICKET_RECEIVED)
    yield
    await connection.close()


@pytest.fixture
def notifiers(tmp_path, amqp_uri, redis_url):
    started: list[NotifierProcess] = []

    def start(*, smtp_port: int, redis_port: int | None = None, lease: str = LEASE_SECONDS,
              timeout: str = SMTP_TIMEOUT) -> NotifierProcess:
        url = redis_url if redis_port is None else redis_url.replace(":6379/", f":{redis_port}/")
        env = {**os.environ, "TM_AMQP_URI": amqp_uri, "TM_REDIS_URL": url, "TM_SMTP_PORT": str(smtp_port),
               "TM_NOTIFIER_PORT": "0", "TM_PREFETCH": "1", "TM_NOTIFIER_SENDERS": "1", "TM_SMTP_TIMEOUT": timeout,
               "TM_NOTIFIER_LEASE_SECONDS": lease, "TM_ROSTER_FILE": str(ROSTER), "TM_LOG_FORMAT": "json",
               "TM_REPLICA_ID": f"notifier-{len(started)}", "PYTHONPATH": str(REPO),
               "TM_NOTIFY_ACK_WAIT_SECONDS": "0"}  # ack on ticket_received: no dispatcher here
        process = NotifierProcess(env, tmp_path / f"notifier-{len(started)}.log").start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.mark.parametrize("point", list(POINTS))
async def test_a_notifier_killed_mid_send_neither_loses_nor_repeats_the_mail_outside_the_window(
        point, relay, ack_queue, notifiers, publish_event, amqp_uri, redis_url, redis_client, tmp_path):
    link, pattern, direction, forward, copies = POINTS[point]
    redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    proxy = await HoldProxy(relay.port if link == SMTP else redis_port, pattern, direction, forward).start()
    body = ticket_received("TM-40001")
    nid = messages.notification_id(body["event_id"], messages.KIND_TICKET_ACK)

    async with AsyncEventListener(amqp_uri, "notifier", ["notification_sent"]) as announced:
        first = notifiers(smtp_port=proxy.port if link == SMTP else relay.port,
                          redis_port=proxy.port if link == REDIS else None)
        await publish_event("intake_email", "ticket_received", body)
        await asyncio.wait_for(proxy.held.wait(), 30)
        first.kill9()
        await proxy.release()
        assert announced.events == []

        # A fresh notifier, no proxies: its own attempts get a generous timeout.
        notifiers(smtp_port=relay.port, lease="11", timeout="5")
        await wait_until(lambda: outbox_record(redis_client, body, messages.KIND_TICKET_ACK).get("announced") == "1",
                         timeout=40, message=f"{point}: the mail sent and announced after the restart")
        await announced.wait_for(lambda _t, b: b["notification_id"] == nid)

    record = outbox_record(redis_client, body, messages.KIND_TICKET_ACK)
    assert record["state"] == "sent"
    deliveries = relay.to("zhang.wei@example.com")
    assert len(deliveries) == copies, f"{point}: {len(deliveries)} copies"
    assert len({d.raw for d in deliveries}) == 1  # a second copy is the same mail, Message-ID and all
    assert deliveries[0].message_id.startswith("<tm.TM-40001.")
    assert [b["notification_id"] for _t, b in announced.events] == [nid]
    log = (tmp_path / "notifier-1.log").read_text()
    found_sending = point in ("sending_recorded_before_data", "message_written_but_not_ended",
                              "relay_committed_before_its_250_arrived", "250_received_before_sent_was_recorded")
    assert ("notification_outcome_unknown" in log) == found_sending
