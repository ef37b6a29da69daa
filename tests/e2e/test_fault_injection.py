"""Fault injection under steady load: every service killed with SIGKILL and restarted in turn,
RabbitMQ and Redis restarted, the IMAP server and the SMTP relay stopped for a while, all while
customers keep writing by email, chat and phone. Afterwards the books must balance:

- every contact is exactly one ticket (one ticket id, however often its event was re-sent);
- every ticket got exactly one first assignment (``ticket_assigned`` with ``attempt`` 1);
- every SLA event (ticket, clock, kind) fired once: one event id each;
- every notification arrived once at the relay (by Message-ID), apart from the window
  services/notifier/delivery.py documents (relay committed, ``sent`` not yet recorded), where a
  second, identical copy is allowed.

At-least-once delivery means the same event may be seen more than once *with the same event
id*; that is allowed and counted ("re-sent") but never a second id for the same fact.

Events are counted from one durable audit queue bound to every service's exchange, declared
before the mesh starts, so it survives the RabbitMQ restart and misses nothing. The brokers are
the test's own (devenv/private_servers.py), the relay an in-process sink restarted on its port.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import aio_pika
import aiohttp
import pytest
import yaml

from devenv.mesh import SERVICES, TEST_CTI_TOKEN, Mesh, isolated_env
from devenv.private_servers import PrivateRabbit, PrivateRedis
from devenv.smtp_sink import SmtpSink
from shared import events as ev
from shared.roster import hash_password
from shared.testing.asyncio_helpers import free_port, wait_until

STEADY = 72                   # 24 per channel, paced through the whole run
FAULTS = 11
CONTACTS = STEADY + 3 * FAULTS  # plus one contact per channel landing right before each fault
LOAD_INTERVAL_SECONDS = 1.2   # steady: one new contact about every second, spread over the faults
SLA_TARGET_SECONDS = 12       # first response; the warning at half of it: both come due mid-run
OUTAGE_SECONDS = 3.0          # how long Redis, the IMAP server and the relay stay away
RETRY_DEADLINE_SECONDS = 120.0
SETTLE_TIMEOUT_SECONDS = 90.0
BURST_WAIT_SECONDS = 30.0
QUIET_SECONDS = 3.0           # no new counted event this long after every count is complete: nothing more comes
AUDIT_QUEUE = "tm-fault-audit"
COUNTED = {ev.TICKET_RECEIVED, ev.TICKET_ASSIGNED, ev.SLA_WARNING, ev.SLA_BREACHED, ev.NOTIFICATION_SENT}
PASSWORD = "fault-test-pw"
SUPERVISOR = "supervisor@ticketmesh.test"
KILLED = ("intake_email", "intake_chat", "intake_phone", "dispatcher", "sla_watcher", "notifier", "agent_desk")
ROSTER = """
agents:
  - agent_id: zhou.jie
    name: 周杰
    email: zhou.jie@ticketmesh.test
    password_hash: {hash}
    skills: {{general: 3, billing: 3, technical: 3, complaints: 3, sales: 3}}
    languages: [zh, en]
    capacity: {{phone: 500, chat: 500, email: 500}}
"""


def channel_of(i: int) -> str:
    return ("email", "chat", "phone")[i % 3]


def contact_key(i: int) -> tuple[str, str]:
    channel = channel_of(i)
    return channel, {"email": f"fault-{i}@example.com", "chat": f"cmsg{i}", "phone": f"call-{i:08d}"}[channel]


def received_key(body: dict) -> tuple[str, str] | None:
    source = body.get("source") or {}
    for channel, field in (("email", "message_id"), ("chat", "client_message_id"), ("phone", "call_id")):
        if body.get("channel") == channel and field in source:
            return channel, source[field]
    return None


def mail(i: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Customer {i} <customer{i}@example.com>"
    msg["To"] = "support@ticketmesh.test"
    msg["Subject"] = f"fault test {i:03d}"
    msg["Message-ID"] = f"<fault-{i}@example.com>"
    msg.set_content(f"mail number {i}: where is my order?")
    return msg.as_bytes()


class Audit:
    """Every event of every exchange, by type, from the durable audit queue."""

    def __init__(self, amqp_uri: str):
        self.amqp_uri = amqp_uri
        self.copies: Counter[str] = Counter()           # event_id -> copies seen
        self.by_type: dict[str, dict[str, dict]] = defaultdict(dict)   # type -> event_id -> body
        self.last_seen = time.monotonic()
        self._task: asyncio.Task | None = None

    async def declare(self) -> None:
        conn = await aio_pika.connect(self.amqp_uri)
        async with conn:
            channel = await conn.channel()
            queue = await channel.declare_queue(AUDIT_QUEUE, durable=True)
            for service in SERVICES:
                exchange = await channel.declare_exchange(ev.exchange_name(service), aio_pika.ExchangeType.TOPIC,
                                                          durable=True)
                await queue.bind(exchange, routing_key="#")

    async def start(self) -> None:
        self._task = asyncio.create_task(self._consume_forever())

    async def _consume_forever(self) -> None:
        # A reconnect loop of our own: aio-pika's robust connection sometimes came back from the
        # RabbitMQ restart without its consumer, and the books then missed everything after it.
        while True:
            try:
                conn = await aio_pika.connect(self.amqp_uri)
            except (aio_pika.exceptions.AMQPError, OSError):
                await asyncio.sleep(0.5)   # the broker is restarting
                continue
            try:
                channel = await conn.channel()
                await channel.set_qos(prefetch_count=200)
                queue = await channel.declare_queue(AUDIT_QUEUE, durable=True)
                await queue.consume(self._on_message)
                while conn.connected.is_set() and not channel.is_closed:
                    await asyncio.sleep(0.2)   # a liveness check on the link, not a wait for events
            except (aio_pika.exceptions.AMQPError, OSError, asyncio.TimeoutError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    await conn.close()

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        body = json.loads(message.body)
        event_id = body.get("event_id", "")
        self.copies[event_id] += 1
        event_type = message.routing_key or ""
        self.by_type[event_type][event_id] = body
        # Only what the books count: unaccepted offers expire and are made again (attempt 2,
        # 3...) as long as the mesh runs, so "no event at all" never comes.
        if event_type in COUNTED and (event_type != ev.TICKET_ASSIGNED or body.get("attempt", 1) == 1):
            self.last_seen = time.monotonic()
        await message.ack()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def events(self, event_type: str) -> list[dict]:
        return list(self.by_type.get(event_type, {}).values())


@dataclass(frozen=True)
class Attempt:
    """A contact's try: accepted, or refused with the pause the server asked for (if it did)."""
    accepted: bool
    retry_after: float | None = None

    def __bool__(self) -> bool:
        return self.accepted


class Load:
    """Steady contacts on the three channels; each retried until its channel accepts it."""

    def __init__(self, dovecot, chat_url: str, phone_url: str):
        self.dovecot, self.chat_url, self.phone_url = dovecot, chat_url, phone_url
        self.accepted: set[int] = set()
        self.refusals = Counter()   # channel -> refused attempts (outages really were seen)

    async def run(self, http: aiohttp.ClientSession) -> None:
        senders = []
        for i in range(STEADY):
            senders.append(asyncio.create_task(self.send(http, i)))
            await asyncio.sleep(LOAD_INTERVAL_SECONDS)   # pacing the load, not waiting for anything
        await asyncio.gather(*senders)

    async def send(self, http: aiohttp.ClientSession, i: int) -> None:
        deadline = time.monotonic() + RETRY_DEADLINE_SECONDS
        channel = channel_of(i)
        steps = {"email": [self._email], "chat": [self._chat],
                 "phone": [lambda http, i: self._phone(http, i, "newCall"),
                           lambda http, i: self._phone(http, i, "hangup")]}[channel]
        for step in steps:
            while not (outcome := await step(http, i)):
                self.refusals[channel] += 1
                assert time.monotonic() < deadline, f"{channel} contact {i} was never accepted"
                # a client's retry pause: what a 429's Retry-After asks for (a long broker restart
                # makes a retrying visitor hit the chat's per-session limit), else half a second
                await asyncio.sleep(min(getattr(outcome, "retry_after", None) or 0.5, max(0.5, deadline - time.monotonic())))
        self.accepted.add(i)

    async def _email(self, _http, i: int) -> bool:
        try:
            await asyncio.to_thread(self.dovecot.append, "support", mail(i))
            return True
        except Exception:  # noqa: BLE001 - IMAP away: the sending MTA retries later
            return False

    async def _chat(self, http: aiohttp.ClientSession, i: int) -> bool:
        body = {"visitor_id": f"fault-visitor-{i:06d}", "client_message_id": f"cmsg{i}",
                "text": f"chat contact {i}: my parcel is late", "name": f"Visitor {i}"}
        try:
            async with http.post(f"{self.chat_url}/api/chat/messages", json=body) as response:
                if response.status == 202:
                    return Attempt(True)
                if response.status == 429:
                    return Attempt(False, float(response.headers["Retry-After"]))
                assert response.status == 503, (response.status, await response.text())
                return Attempt(False)
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return Attempt(False)

    async def _phone(self, http: aiohttp.ClientSession, i: int, event: str) -> bool:
        body = {"event": event, "callId": f"call-{i:08d}", "from": f"+8613{i:09d}", "to": "+864008001234",
                "direction": "in"}
        if event == "hangup":
            body["cause"] = "cancel"
        try:
            async with http.post(f"{self.phone_url}/api/v1/cti/{TEST_CTI_TOKEN}", json=body) as response:
                if response.status == 200:
                    return True
                assert response.status == 503, (response.status, await response.text())
                return False
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False


def sink_copies(sink: SmtpSink) -> Counter[str]:
    return Counter(str(m.message.get("Message-ID", "")).strip().strip("<>") for m in sink.messages())


@pytest.mark.timeout(360)
async def test_every_contact_one_ticket_through_kills_and_restarts(tmp_path, dovecot):
    started = time.monotonic()

    def say(what: str) -> None:
        print(f"  [{time.monotonic() - started:5.1f} s] {what}", flush=True)

    rabbit_dir = Path(tempfile.mkdtemp(prefix="tm-fault-rabbit-"))  # the rabbitmq user must reach it
    rabbit, redis = PrivateRabbit(rabbit_dir), PrivateRedis(tmp_path / "redis")
    sink = SmtpSink(tmp_path / "outbox", smtp_port=free_port())
    (tmp_path / "outbox").mkdir()
    roster = tmp_path / "roster.yaml"
    roster.write_text(ROSTER.format(hash=hash_password(PASSWORD)))
    policy = tmp_path / "sla.yaml"
    policy.write_text(yaml.safe_dump({"policies": [{
        "name": "fault", "calendar": "always", "first_response": SLA_TARGET_SECONDS, "warn_at": [0.5],
        "escalate_on_breach": False}]}))
    await asyncio.gather(asyncio.to_thread(rabbit.start), asyncio.to_thread(redis.start), sink.start())
    env = isolated_env(amqp_uri=rabbit.amqp_uri, redis_url=redis.url, work_dir=tmp_path, imap_port=dovecot.port,
                       smtp_port=sink.smtp_port, TM_RABBIT_MGMT_URL=rabbit.mgmt_url, TM_ROSTER_FILE=str(roster),
                       TM_SLA_POLICY_FILE=str(policy), TM_DESK_PRESENCE_GRACE_SECONDS="3600",
                       # Short enough to finish inside the test: a relay outage defers mail for ~1 s,
                       # a killed notifier's claimed mail is taken over after 5 s.
                       TM_NOTIFIER_RETRY_BASE_SECONDS="1", TM_NOTIFIER_RETRY_CAP_SECONDS="3",
                       TM_SMTP_TIMEOUT="2", TM_NOTIFIER_LEASE_SECONDS="5", TM_NOTIFIER_CAP_EXEMPT=SUPERVISOR)
    audit = Audit(rabbit.amqp_uri)
    mesh = Mesh(env, tmp_path / "log")
    faults: list[tuple[str, float]] = []
    try:
        await audit.declare()
        await audit.start()
        say("brokers and audit queue ready")
        await asyncio.to_thread(mesh.start)
        say("mesh ready")
        desk = mesh.url("agent_desk")
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                         timeout=aiohttp.ClientTimeout(total=10)) as http:
            async with http.post(f"{desk}/api/login", json={"agent_id": "zhou.jie", "password": PASSWORD}) as r:
                assert r.status == 200, await r.text()
            async with http.post(f"{desk}/api/presence", json={"presence": "online"}) as r:
                assert r.status == 200, await r.text()

            load = Load(dovecot, mesh.url("intake_chat"), mesh.url("intake_phone"))
            load_task = asyncio.create_task(load.run(http))

            async def fault(name: str, action) -> None:
                # One contact per channel just before the fault, the fault once their tickets
                # are out: the services downstream are then busy with them when it strikes.
                burst = [STEADY + 3 * len(faults) + j for j in range(3)]
                await asyncio.gather(*(load.send(http, i) for i in burst))
                keys = {contact_key(i) for i in burst}
                try:
                    await wait_until(lambda: keys <= {received_key(b) for b in audit.events(ev.TICKET_RECEIVED)}
                                     or None, BURST_WAIT_SECONDS, f"the tickets of the burst before {name}")
                except AssertionError:
                    say(f"the burst before {name} is not out within {BURST_WAIT_SECONDS} s (the books will tell)")
                t0 = time.monotonic()
                await action()
                faults.append((name, round(time.monotonic() - t0, 1)))
                say(f"{name}: {faults[-1][1]} s; {len(load.accepted)} contacts in, "
                    f"{len(audit.events(ev.TICKET_RECEIVED))} tickets seen")

            async def kill_restart(service: str) -> None:
                await asyncio.to_thread(mesh.kill, service)
                await asyncio.to_thread(mesh.restart, service)

            async def outage(stop, start) -> None:
                await stop()
                await asyncio.sleep(OUTAGE_SECONDS)   # the outage itself
                await start()

            await asyncio.sleep(4)   # some load before the first fault
            for service in KILLED:
                await fault(f"kill -9 {service}", lambda: kill_restart(service))
            await fault("restart RabbitMQ", lambda: asyncio.to_thread(rabbit.restart))
            await fault("stop Redis", lambda: outage(lambda: asyncio.to_thread(redis.stop),
                                                     lambda: asyncio.to_thread(redis.start)))
            await fault("stop IMAP", lambda: outage(lambda: asyncio.to_thread(dovecot.stop),
                                                    lambda: asyncio.to_thread(dovecot.start)))
            await fault("stop SMTP relay", lambda: outage(sink.stop, sink.start))
            assert len(faults) == FAULTS
            await load_task
            say("load done")
            assert load.accepted == set(range(CONTACTS))

            def complete() -> bool:
                tickets = {b["ticket_id"] for b in audit.events(ev.TICKET_RECEIVED) if received_key(b)}
                first = {b["ticket_id"] for b in audit.events(ev.TICKET_ASSIGNED) if b.get("attempt", 1) == 1}
                breached = {b["ticket_id"] for b in audit.events(ev.SLA_BREACHED)}
                notified = {b["notification_id"] for b in audit.events(ev.NOTIFICATION_SENT)}
                return (len({received_key(b) for b in audit.events(ev.TICKET_RECEIVED)} - {None}) >= CONTACTS
                        and tickets <= first and tickets <= breached
                        and len(notified) <= len(sink_copies(sink)))

            try:
                await wait_until(lambda: complete() or None, SETTLE_TIMEOUT_SECONDS, "every count complete")
                say("counts complete")
            except AssertionError:
                say(f"counts still incomplete after {SETTLE_TIMEOUT_SECONDS:.0f} s: the books below say where")
            await wait_until(lambda: time.monotonic() - audit.last_seen > QUIET_SECONDS or None, 30,
                             "the events to stop coming")
            assert mesh.exited() == {}, f"a service died: {mesh.exited()}"
            copies = sink_copies(sink)
    finally:
        await asyncio.to_thread(mesh.stop)
        await audit.stop()
        await sink.stop()
        await asyncio.gather(asyncio.to_thread(rabbit.stop), asyncio.to_thread(redis.stop))
        shutil.rmtree(rabbit_dir, ignore_errors=True)

    # --- the books ------------------------------------------------------------------------------
    received = audit.events(ev.TICKET_RECEIVED)
    tickets_per_contact: dict[tuple, set[str]] = defaultdict(set)
    for body in received:
        key = received_key(body)
        if key is not None:
            tickets_per_contact[key].add(body["ticket_id"])
    tickets = set().union(*tickets_per_contact.values())
    first_ids: dict[str, set[str]] = defaultdict(set)
    for body in audit.events(ev.TICKET_ASSIGNED):
        if body.get("attempt", 1) == 1:
            first_ids[body["ticket_id"]].add(body["event_id"])
    sla_ids: dict[tuple, set[str]] = defaultdict(set)
    for kind in (ev.SLA_WARNING, ev.SLA_BREACHED):
        for body in audit.events(kind):
            sla_ids[(body["ticket_id"], body["clock"], kind)].add(body["event_id"])
    sent = audit.events(ev.NOTIFICATION_SENT)
    notification_ids = {b["notification_id"] for b in sent}
    acks = {b["ticket_id"] for b in sent if b["kind"] == "ticket_ack"}
    email_tickets = {b["ticket_id"] for b in received if b["channel"] == "email"}

    def resent(event_type: str) -> int:
        return sum(audit.copies[i] - 1 for i in audit.by_type.get(event_type, {}))

    rows = [
        ("contacts -> tickets", CONTACTS, len(tickets), sum(len(t) - 1 for t in tickets_per_contact.values()),
         resent(ev.TICKET_RECEIVED)),
        ("first assignments", len(tickets), len(first_ids), sum(len(i) - 1 for i in first_ids.values()),
         resent(ev.TICKET_ASSIGNED)),
        ("SLA warnings", len(tickets), sum(1 for k in sla_ids if k[2] == ev.SLA_WARNING),
         sum(len(i) - 1 for k, i in sla_ids.items() if k[2] == ev.SLA_WARNING), resent(ev.SLA_WARNING)),
        ("SLA breaches", len(tickets), sum(1 for k in sla_ids if k[2] == ev.SLA_BREACHED),
         sum(len(i) - 1 for k, i in sla_ids.items() if k[2] == ev.SLA_BREACHED), resent(ev.SLA_BREACHED)),
        ("notifications (relay)", len(notification_ids), len(copies), sum(c - 1 for c in copies.values()),
         resent(ev.NOTIFICATION_SENT)),
        ("  of which email acks", len(email_tickets), len(acks), 0, 0),
    ]
    print(f"\nfaults (seconds each): {faults}")
    print(f"refused attempts per channel during outages: {dict(load.refusals)}")
    print(f"{'':24}{'expected':>9}{'seen':>7}{'dup ids':>9}{'re-sent':>9}")
    for name, expected, seen, dup_ids, resent_copies in rows:
        print(f"{name:24}{expected:>9}{seen:>7}{dup_ids:>9}{resent_copies:>9}")
    print(f"total {time.monotonic() - started:.0f} s")

    missing = {contact_key(i) for i in range(CONTACTS)} - set(tickets_per_contact)
    assert not missing, f"contacts that never became a ticket: {sorted(missing)}"
    assert all(len(t) == 1 for t in tickets_per_contact.values()), \
        {k: t for k, t in tickets_per_contact.items() if len(t) > 1}
    assert len(tickets) == CONTACTS
    assert set(first_ids) == tickets, f"never assigned: {sorted(tickets - set(first_ids))}"
    assert all(len(i) == 1 for i in first_ids.values()), {t: i for t, i in first_ids.items() if len(i) != 1}
    breaches = {k[0] for k in sla_ids if k[2] == ev.SLA_BREACHED}
    assert breaches == tickets, tickets - breaches
    assert all(len(i) == 1 for i in sla_ids.values()), {k: i for k, i in sla_ids.items() if len(i) > 1}
    assert acks == email_tickets, email_tickets - acks
    assert len(copies) == len(notification_ids), (len(copies), len(notification_ids))
    # The documented window (a kill between the relay's commit and the "sent" record): one
    # notifier kill can leave at most one mail twice; any other copy is a lost guarantee.
    assert sum(c - 1 for c in copies.values()) <= 1, {m: c for m, c in copies.items() if c > 1}
