"""SIGTERM in the middle of a burst, once per runtime: the dispatcher (nameko) and the notifier
(asyncio). The process must exit 0 within its grace time and leave nothing half-done: what it
had started is finished (all of its effects are there), what it had not started is still in the
queue and is done by the next process, exactly once.

"Done" is seen from outside, as production would see it: the dispatcher's pair of events per
ticket (``ticket_classified`` then ``ticket_queued``: classified but never queued would be
half-done); the notifier's acknowledgement mail at the relay (by Message-ID) and its
``notification_sent``.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import defaultdict
from datetime import datetime, timezone

import aio_pika

from devenv.mesh import Mesh, isolated_env
from devenv.smtp_sink import SmtpSink
from shared import events as ev
from shared.testing.asyncio_helpers import free_port, wait_until
from shared.testing.plugin import AsyncEventListener

BURST = 60
RELAY_DELAY_SECONDS = 0.5
GRACE_SECONDS = 15.0   # what an orchestrator gives (Kubernetes' default is 30)


def ticket_received(i: int, prefix: str) -> dict:
    now = datetime.now(timezone.utc)
    return ev.make_event(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, now=now, trace_id=f"trace-{prefix}-{i}",
                         ticket_id=f"TM-{prefix}-{i:04d}", channel="email",
                         customer={"name": f"Customer {i}", "email": f"{prefix}{i}@example.com", "language": "en",
                                   "verified": ["email"]},
                         subject=f"order {i} is late", text="Where is my order?", received_at=now.isoformat(),
                         source={"message_id": f"{prefix}-{i}@example.com"})


async def publish_burst(amqp_uri: str, bodies: list[dict]) -> None:
    conn = await aio_pika.connect(amqp_uri)
    async with conn:
        channel = await conn.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(ev.exchange_name(ev.INTAKE_EMAIL), aio_pika.ExchangeType.TOPIC,
                                                  durable=True)
        for body in bodies:
            await exchange.publish(aio_pika.Message(json.dumps(body).encode(), content_type="application/json",
                                                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                                   routing_key=ev.TICKET_RECEIVED)


async def consumers_ready(mesh: Mesh, service: str) -> None:
    # A topic exchange drops what no queue is bound to yet: publish once the handlers consume.
    await wait_until(lambda: mesh._queues_consumed(service) or None, 60, f"{service}'s queues consumed")


async def sigterm_and_wait(mesh: Mesh, service: str) -> tuple[int, float]:
    proc = mesh.processes[service].proc
    sent = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    code = await asyncio.to_thread(proc.wait, GRACE_SECONDS)
    return code, time.monotonic() - sent


def by_ticket(listener: AsyncEventListener) -> dict[str, dict[str, set[str]]]:
    """ticket -> event type -> event ids."""
    seen: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for event_type, body in listener.events:
        seen[body["ticket_id"]][event_type].add(body["event_id"])
    return seen


async def test_dispatcher_sigterm_mid_burst_finishes_or_requeues(tmp_path, amqp_uri, redis_url):
    env = isolated_env(amqp_uri=amqp_uri, redis_url=redis_url, work_dir=tmp_path, imap_port=1, smtp_port=1,
                       TM_PREFETCH="10")
    mesh = Mesh(env, tmp_path / "log")
    bodies = [ticket_received(i, "dsp") for i in range(BURST)]
    done_types = {ev.TICKET_CLASSIFIED, ev.TICKET_QUEUED}
    try:
        async with AsyncEventListener(amqp_uri, ev.DISPATCHER, sorted(done_types)) as listener:
            await asyncio.to_thread(mesh.start, ["dispatcher"])
            await consumers_ready(mesh, "dispatcher")
            await publish_burst(amqp_uri, bodies)
            await listener.wait_for(lambda t, _b: t == ev.TICKET_QUEUED, timeout=30)
            code, took = await sigterm_and_wait(mesh, "dispatcher")
            assert code == 0, f"dispatcher exited {code} after SIGTERM"
            # Events published before the exit may still be on their way to us: a last look
            # once the queue-side count stops changing.
            try:
                await wait_until(lambda: all(len(t) == 2 for t in by_ticket(listener).values()) or None, 10,
                                 "the dying dispatcher's events to arrive")
            except AssertionError:
                pass   # the assertion below says which tickets were left half-done
            at_exit = by_ticket(listener)
            assert code == 0, f"dispatcher exited {code} after SIGTERM"
            # Nothing half-done: a ticket the dying worker classified was also queued.
            half_done = {t: set(types) for t, types in at_exit.items() if set(types) != done_types}
            assert not half_done, half_done
            finished_before = len(at_exit)
            assert finished_before < BURST, "the burst was over before SIGTERM: nothing was in flight"

            await asyncio.to_thread(mesh.restart, "dispatcher")
            await listener.wait_for(lambda _t, _b: sum(1 for t in by_ticket(listener).values()
                                                        if set(t) == done_types) >= BURST, timeout=60)
            final = by_ticket(listener)
    finally:
        await asyncio.to_thread(mesh.stop)
    print(f"\ndispatcher: SIGTERM -> exit 0 in {took:.1f} s; {finished_before}/{BURST} tickets done before, "
          f"the rest returned to the queue and done after the restart")
    assert set(final) == {b["ticket_id"] for b in bodies}
    for ticket, types in final.items():
        assert {t: len(ids) for t, ids in types.items()} == {t: 1 for t in done_types}, (ticket, types)


async def test_notifier_sigterm_mid_burst_finishes_or_requeues(tmp_path, amqp_uri, redis_url):
    # A slow relay: SIGTERM finds mails in the middle of their SMTP transaction.
    sink = SmtpSink(tmp_path / "outbox", smtp_port=free_port(), accept_delay=RELAY_DELAY_SECONDS)
    await sink.start()
    env = isolated_env(amqp_uri=amqp_uri, redis_url=redis_url, work_dir=tmp_path, imap_port=1,
                       smtp_port=sink.smtp_port, TM_NOTIFY_ACK_WAIT_SECONDS="0", TM_PREFETCH="10",
                       TM_NOTIFIER_CAP_EXEMPT="", TM_SMTP_TIMEOUT="2", TM_NOTIFIER_LEASE_SECONDS="5")
    mesh = Mesh(env, tmp_path / "log")
    bodies = [ticket_received(i, "ntf") for i in range(BURST)]

    def delivered() -> dict[str, int]:
        copies: dict[str, int] = defaultdict(int)
        for message in sink.messages():
            copies[str(message.message.get("Message-ID", ""))] += 1
        return copies

    try:
        async with AsyncEventListener(amqp_uri, ev.NOTIFIER, [ev.NOTIFICATION_SENT]) as listener:
            await asyncio.to_thread(mesh.start, ["notifier"])
            await consumers_ready(mesh, "notifier")
            await publish_burst(amqp_uri, bodies)
            await listener.wait_for(lambda _t, _b: True, timeout=30)
            code, took = await sigterm_and_wait(mesh, "notifier")
            assert code == 0, f"notifier exited {code} after SIGTERM"
            at_exit = delivered()
            # The announcements published before the exit may still be on their way to us.
            try:
                await listener.wait_for(lambda _t, _b: len({b["ticket_id"] for _t, b in listener.events}) >= len(at_exit),
                                        timeout=10)
            except AssertionError:
                pass   # the assertion below counts the mails sent but never recorded
            announced_at_exit = {b["ticket_id"] for _t, b in listener.events}
            # Nothing half-done: every mail the relay has was also announced (no mail sent but
            # unrecorded), and none went twice.
            assert len(at_exit) == len(announced_at_exit) and all(c == 1 for c in at_exit.values()), \
                (len(at_exit), len(announced_at_exit))
            assert len(announced_at_exit) < BURST, "the burst was over before SIGTERM: nothing was in flight"

            await asyncio.to_thread(mesh.restart, "notifier")
            await listener.wait_for(lambda _t, _b: len({b["ticket_id"] for _t, b in listener.events}) >= BURST,
                                    timeout=60)
            final = delivered()
            events = list(listener.events)
    finally:
        await asyncio.to_thread(mesh.stop)
        await sink.stop()
    print(f"\nnotifier: SIGTERM -> exit 0 in {took:.1f} s; {len(announced_at_exit)}/{BURST} acks sent before, "
          f"the rest after the restart")
    ids_per_ticket: dict[str, set[str]] = defaultdict(set)
    for _t, body in events:
        ids_per_ticket[body["ticket_id"]].add(body["notification_id"])
    assert set(ids_per_ticket) == {b["ticket_id"] for b in bodies}
    assert all(len(ids) == 1 for ids in ids_per_ticket.values())
    assert len(final) == BURST and all(c == 1 for c in final.values()), final
