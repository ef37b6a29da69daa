"""The SMTP side against real aiosmtpd servers: STARTTLS and implicit TLS with a certificate from
a throwaway CA (trustme), AUTH, certificate checking, wrong passwords, and reusing one
connection for many mails."""
from __future__ import annotations

import pytest

from services.notifier import delivery_policy as dp
from services.notifier.mailer import LeaseLost, SmtpConfig, SmtpSession
from services.notifier.service import create_service
from services.notifier.tests.factories import ticket_received
from services.notifier.tests.helpers import notifier_settings
from services.notifier.tests.smtp_doubles import ScriptedSmtp, certificate_authority, server_context
from shared.testing.asyncio_helpers import free_port, wait_until

USERS = {"notifier": "s3cret-relay-pass"}
SENDER = "support@ticketmesh.test"


def raw_mail(n: int = 1, to: str = "zhang.wei@example.com") -> bytes:
    return (f"From: {SENDER}\r\nTo: {to}\r\nSubject: test {n}\r\nMessage-ID: <tls-test-{n}@ticketmesh.test>\r\n\r\n"
            f"body {n}\r\n").encode()


async def always() -> bool:
    return True


@pytest.fixture
def ca(tmp_path):
    return certificate_authority(tmp_path)


@pytest.fixture
async def servers():
    running: list[ScriptedSmtp] = []

    async def start(**kw) -> ScriptedSmtp:
        server = await ScriptedSmtp(free_port(), **kw).start()
        running.append(server)
        return server

    yield start
    for server in running:
        await server.stop()


async def test_the_notifier_sends_over_starttls_with_auth(ca, servers, amqp_uri, redis_url, publish_event):
    authority, ca_file = ca
    relay = await servers(tls_context=server_context(authority), users=USERS)
    service = create_service(notifier_settings(
        amqp_uri, redis_url, relay.port, TM_SMTP_STARTTLS="true", TM_SMTP_CA_FILE=ca_file,
        TM_SMTP_USER="notifier", TM_SMTP_PASSWORD=USERS["notifier"]))
    await service.start()
    try:
        await publish_event("intake_email", "ticket_received", ticket_received("TM-30001"))
        (delivery,) = await wait_until(lambda: relay.deliveries, message="mail over STARTTLS")
    finally:
        await service.stop()
    assert delivery.tls and delivery.user == "notifier"
    assert delivery.rcpt_tos == ("zhang.wei@example.com",) and delivery.message["Subject"].startswith("[#TM-30001]")


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # it is TLS: from the first byte
async def test_implicit_tls_with_auth(ca, servers):
    authority, ca_file = ca
    relay = await servers(tls_context=server_context(authority), implicit_tls=True, users=USERS)
    session = SmtpSession(SmtpConfig("127.0.0.1", relay.port, "notifier", USERS["notifier"], "tls", ca_file, 5))
    try:
        reply = await session.send(SENDER, "zhang.wei@example.com", raw_mail(), before_data=always)
    finally:
        await session.close()
    assert reply.startswith("2.0.0 Accepted")
    assert [(d.message_id, d.tls, d.user) for d in relay.deliveries] == [("<tls-test-1@ticketmesh.test>", True,
                                                                         "notifier")]


async def test_a_certificate_we_cannot_verify_stops_the_connection_before_anything_is_sent(ca, servers):
    authority, _ca_file = ca
    relay = await servers(tls_context=server_context(authority), users=USERS)
    # No CA file: the system's CAs do not know the throwaway one.
    session = SmtpSession(SmtpConfig("127.0.0.1", relay.port, "notifier", USERS["notifier"], "starttls", "", 5))
    with pytest.raises(dp.SmtpFailure) as failed:
        await session.send(SENDER, "zhang.wei@example.com", raw_mail(), before_data=always)
    await session.close()
    assert failed.value.stage == dp.TLS and failed.value.code is None
    assert "CERTIFICATE_VERIFY_FAILED" in str(failed.value)
    assert dp.verdict(failed.value) == dp.RETRY  # the relay may get a proper certificate; dead letter after N
    assert relay.deliveries == [] and relay.rcpt_seen == []


async def test_a_wrong_password_is_a_refusal_that_blames_no_address(ca, servers):
    authority, ca_file = ca
    relay = await servers(tls_context=server_context(authority), users=USERS)
    session = SmtpSession(SmtpConfig("127.0.0.1", relay.port, "notifier", "wrong", "starttls", ca_file, 5))
    with pytest.raises(dp.SmtpFailure) as failed:
        await session.send(SENDER, "zhang.wei@example.com", raw_mail(), before_data=always)
    await session.close()
    assert (failed.value.stage, failed.value.code) == (dp.AUTH, 535)
    assert dp.verdict(failed.value) == dp.REFUSED
    assert relay.deliveries == []


async def test_one_connection_carries_many_mails_and_a_dropped_idle_one_is_replaced(servers):
    relay = await servers()
    session = SmtpSession(SmtpConfig("127.0.0.1", relay.port, timeout=5))
    try:
        for n in (1, 2, 3):
            await session.send(SENDER, f"c{n}@example.com", raw_mail(n, f"c{n}@example.com"), before_data=always)
        assert relay.sessions == 1
        # The relay restarts (or closed our idle connection): the next mail opens a new one.
        await relay.stop()
        await relay.start()
        await session.send(SENDER, "c4@example.com", raw_mail(4, "c4@example.com"), before_data=always)
    finally:
        await session.close()
    assert relay.sessions == 2
    assert [d.rcpt_tos for d in relay.deliveries] == [("c1@example.com",), ("c2@example.com",), ("c3@example.com",),
                                                       ("c4@example.com",)]


async def test_a_sender_that_lost_its_lease_sends_nothing_and_keeps_the_connection_usable(servers):
    relay = await servers()
    session = SmtpSession(SmtpConfig("127.0.0.1", relay.port, timeout=5))

    async def taken_over() -> bool:
        return False

    try:
        with pytest.raises(LeaseLost):
            await session.send(SENDER, "c1@example.com", raw_mail(1, "c1@example.com"), before_data=taken_over)
        await session.send(SENDER, "c2@example.com", raw_mail(2, "c2@example.com"), before_data=always)
    finally:
        await session.close()
    assert [d.rcpt_tos for d in relay.deliveries] == [("c2@example.com",)] and relay.sessions == 1
