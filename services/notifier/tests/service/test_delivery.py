"""Delivery against a real SMTP server that answers 4xx, 5xx or nothing on cue (aiosmtpd),
with the notifier on a real RabbitMQ vhost and Redis: retries, dead letters and replay, refused
and bounced addresses, timeouts, loop caps and loop-safe recipients.

The relay (``ScriptedSmtp``) commits a message before it answers 250, as a real MTA does.
"""
from __future__ import annotations

import asyncio
import json

import pytest
import structlog

from services.notifier import messages
from services.notifier.outbox import DEAD_KEY
from services.notifier.service import create_service
from services.notifier.tests.factories import agent_replied, mail_bounced, sla_breached, ticket_received
from services.notifier.tests.helpers import notifier_settings, outbox_record
from services.notifier.tests.smtp_doubles import ScriptedSmtp
from shared import cli
from shared.testing.asyncio_helpers import wait_until
from shared.testing.plugin import AsyncEventListener

ACK = messages.KIND_TICKET_ACK


@pytest.fixture
async def relay(smtp_port):
    server = await ScriptedSmtp(smtp_port).start()
    yield server
    await server.stop()


@pytest.fixture
async def start_notifier(amqp_uri, redis_url, smtp_port):
    started = []

    async def start(**env: str):
        service = create_service(notifier_settings(amqp_uri, redis_url, smtp_port, **env))
        await service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        await service.stop()


@pytest.fixture
def ops(monkeypatch, redis_url):
    """``await ops("notifications", "dead", "--json")``: the CLI against this test's Redis; its exit code."""
    monkeypatch.setenv("TM_REDIS_URL", redis_url)

    async def run(*argv: str) -> int:
        return await asyncio.to_thread(cli.main, list(argv))

    return run


def nid_of(body: dict, kind: str = ACK) -> str:
    return messages.notification_id(body["event_id"], kind)


def state_of(redis_client, body: dict, kind: str = ACK) -> str | None:
    return outbox_record(redis_client, body, kind).get("state")


async def test_a_4xx_is_retried_with_backoff_while_other_mail_goes_out(relay, start_notifier, publish, amqp_uri,
                                                                      redis_client):
    relay.always_refuse["slow@example.com"] = "451 4.7.1 Greylisted, try again later"
    slow, quick = ticket_received("TM-20001", email="slow@example.com"), ticket_received("TM-20002",
                                                                                          email="quick@example.com")
    await start_notifier()
    async with AsyncEventListener(amqp_uri, "notifier", ["notification_sent"]) as sent:
        await publish("intake_email", "ticket_received", slow)
        await wait_until(lambda: relay.rcpt_seen.count("slow@example.com") >= 2, message="slow refused twice")
        await publish("intake_email", "ticket_received", quick)
        await wait_until(lambda: relay.to("quick@example.com"), message="the next mail is not held up")
        assert relay.to("slow@example.com") == []
        record = outbox_record(redis_client, slow, ACK)
        assert record["state"] == "queued"
        assert record["last_error"] == "rcpt: SMTP 451 4.7.1 Greylisted, try again later"
        del relay.always_refuse["slow@example.com"]  # the greylisting lets us in
        await wait_until(lambda: relay.to("slow@example.com"), message="slow delivered once accepted")
        await sent.wait_for(lambda _t, b: b["ticket_id"] == "TM-20001")
    await wait_until(lambda: outbox_record(redis_client, slow, ACK).get("announced") == "1", message="done")
    assert relay.by_message_id() == {relay.to("slow@example.com")[0].message_id: 1,
                                     relay.to("quick@example.com")[0].message_id: 1}
    assert int(outbox_record(redis_client, slow, ACK)["attempts"]) == relay.rcpt_seen.count("slow@example.com") >= 3
    assert [b["notification_id"] for _t, b in sent.events].count(nid_of(slow)) == 1


async def test_attempts_spent_make_a_dead_letter_that_ops_can_list_and_replay(relay, start_notifier, publish,
                                                                             amqp_uri, redis_client, ops, capsys):
    relay.always_refuse["full@example.com"] = "452 4.2.2 Mailbox full"
    body = ticket_received("TM-20010", email="full@example.com")
    await start_notifier(TM_NOTIFIER_MAX_ATTEMPTS="3")
    async with AsyncEventListener(amqp_uri, "notifier", ["notification_failed", "notification_sent"]) as events:
        await publish("intake_email", "ticket_received", body)
        _, failed = await events.wait_for(lambda t, _b: t == "notification_failed")
        assert (failed["ticket_id"], failed["kind"], failed["permanent"], failed["attempts"]) == (
            "TM-20010", ACK, False, 3)
        assert failed["recipient"] == "f***@example.com" and "452 4.2.2 Mailbox full" in failed["reason"]
        assert relay.rcpt_seen.count("full@example.com") == 3 and relay.deliveries == []
        await wait_until(lambda: outbox_record(redis_client, body, ACK).get("announced") == "1", message="announced")
        assert redis_client.zrange(DEAD_KEY, 0, -1) == [nid_of(body)]

        capsys.readouterr()
        assert await ops("notifications", "dead", "--json") == 0
        listed = json.loads(capsys.readouterr().out)
        assert [(r["id"], r["state"], r["kind"], r["ticket"], r["recipient"], r["attempts"]) for r in listed] == [
            (nid_of(body), "dead", ACK, "TM-20010", "f***@example.com", 3)]
        assert await ops("notifications", "show", nid_of(body)) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["headers"]["Subject"].startswith("[#TM-20010]") and shown["recipient"] == "full@example.com"
        assert await ops("notifications", "replay", "no-such-id") == 2

        del relay.always_refuse["full@example.com"]
        assert await ops("notifications", "replay", nid_of(body)) == 0
        assert "1 replayed" in capsys.readouterr().out
        await events.wait_for(lambda t, b: t == "notification_sent" and b["ticket_id"] == "TM-20010")
    assert len(relay.to("full@example.com")) == 1
    assert redis_client.zcard(DEAD_KEY) == 0
    assert await ops("notifications", "dead") == 0 and "no dead notifications" in capsys.readouterr().out


async def test_a_5xx_to_rcpt_stops_at_once_and_suppresses_the_address(relay, start_notifier, publish, amqp_uri,
                                                                     redis_client, ops, capsys):
    relay.always_refuse["gone@example.com"] = "550 5.1.1 <gone@example.com>: Recipient address rejected"
    body = ticket_received("TM-20020", email="gone@example.com")
    await start_notifier()
    async with AsyncEventListener(amqp_uri, "notifier", ["notification_failed", "notification_sent"]) as events:
        await publish("intake_email", "ticket_received", body)
        _, failed = await events.wait_for(lambda t, _b: t == "notification_failed")
        assert (failed["permanent"], failed["attempts"]) == (True, 1)
        assert "550 5.1.1 <g***@example.com>" in failed["reason"]  # the relay's answer, address masked
        suppressed = "tm:notifier:bounced:gone@example.com"
        assert redis_client.get(suppressed) == "refused" and redis_client.ttl(suppressed) > 59 * 86400
        with structlog.testing.capture_logs() as logs:
            await publish("agent_desk", "agent_replied", agent_replied("TM-20020", email="gone@example.com"))
            await publish("agent_desk", "agent_replied", agent_replied("TM-20021", email="sentinel@example.com"))
            await wait_until(lambda: relay.to("sentinel@example.com"), message="sentinel reply")
        assert [(e["kind"], e["reason"]) for e in logs if e["event"] == "notification_skipped"] == [
            ("agent_reply", "bounced_address")]
        assert relay.rcpt_seen.count("gone@example.com") == 1  # no retry, and nothing more to it

        # The mailbox exists after all (say the relay was wrong): replaying lifts our suppression.
        del relay.always_refuse["gone@example.com"]
        capsys.readouterr()
        assert await ops("notifications", "replay", "--all") == 0
        assert "lifted the suppression of g***@example.com" in capsys.readouterr().out
        await events.wait_for(lambda t, b: t == "notification_sent" and b["ticket_id"] == "TM-20020")
    assert redis_client.get(suppressed) is None and len(relay.to("gone@example.com")) == 1


async def test_a_policy_refusal_stops_the_mail_but_blames_no_address(relay, start_notifier, publish, amqp_uri,
                                                                    redis_client):
    relay.always_refuse["zhang.wei@example.com"] = "554 5.7.1 <zhang.wei@example.com>: Relay access denied"
    body = ticket_received("TM-20030")
    await start_notifier()
    async with AsyncEventListener(amqp_uri, "notifier", ["notification_failed"]) as events:
        await publish("intake_email", "ticket_received", body)
        _, failed = await events.wait_for(lambda t, _b: t == "notification_failed")
    assert failed["permanent"] is True and "5.7.1" in failed["reason"]
    assert state_of(redis_client, body) == "failed"
    assert redis_client.exists("tm:notifier:bounced:zhang.wei@example.com") == 0


async def test_a_relay_that_does_not_answer_in_time_is_tried_again(relay, start_notifier, publish, redis_client):
    relay.stall_greetings, relay.stall_seconds = 1, 2.5
    body = ticket_received("TM-20040")
    await start_notifier(TM_SMTP_TIMEOUT="1")
    await publish("intake_email", "ticket_received", body)
    await wait_until(lambda: outbox_record(redis_client, body, ACK).get("announced") == "1", timeout=15,
                     message="sent after the timeout")
    record = outbox_record(redis_client, body, ACK)
    assert record["attempts"] == "2" and record["last_error"].startswith("connect: SMTPReadTimeoutError")
    assert len(relay.deliveries) == 1


async def test_no_answer_to_data_is_the_one_window_where_a_second_copy_can_go_out(relay, start_notifier, publish,
                                                                                 redis_client):
    """The relay commits the message, then its 250 does not come in time: we cannot know it has
    the mail, so we send it again, byte-identical (the documented window; see delivery.py)."""
    relay.stall_data_answers, relay.stall_seconds = 1, 2.5
    body = ticket_received("TM-20050")
    await start_notifier(TM_SMTP_TIMEOUT="1")
    with structlog.testing.capture_logs() as logs:
        await publish("intake_email", "ticket_received", body)
        await wait_until(lambda: outbox_record(redis_client, body, ACK).get("announced") == "1", timeout=15,
                         message="sent on the second attempt")
    first, second = relay.deliveries
    assert first.raw == second.raw and first.message_id == second.message_id  # clients show it once
    assert [e["stage"] for e in logs if e["event"] == "notification_outcome_unknown"] == ["data"]
    assert outbox_record(redis_client, body, ACK)["attempts"] == "2"


async def test_an_address_that_bounces_while_its_mail_waits_gets_nothing(relay, start_notifier, publish, amqp_uri,
                                                                         redis_client):
    relay.always_refuse["bouncing@example.com"] = "451 4.4.1 No answer from host"
    body = ticket_received("TM-20060", email="bouncing@example.com")
    await start_notifier(TM_NOTIFIER_MAX_ATTEMPTS="1000")
    async with AsyncEventListener(amqp_uri, "notifier", ["notification_failed"]) as events:
        await publish("intake_email", "ticket_received", body)
        await wait_until(lambda: "bouncing@example.com" in relay.rcpt_seen, message="first attempt deferred")
        # An earlier mail of ours to the address bounced (a real DSN, naming the ticket).
        await publish("intake_email", "mail_bounced", mail_bounced("bouncing@example.com", ticket_id="TM-20060"))
        _, failed = await events.wait_for(lambda t, _b: t == "notification_failed")
    assert (failed["reason"], failed["permanent"]) == ("bounced_address", True)
    assert state_of(redis_client, body) == "failed" and relay.deliveries == []


async def test_loop_caps_stop_automatic_mail_per_ticket_and_per_recipient_but_never_a_persons_reply(
        relay, start_notifier, publish):
    """Customer mail counts per ticket and over all tickets; a staff notice per ticket only (it is
    raised by clocks, never by its recipient's mail, so it cannot loop); an agent's reply never."""
    await start_notifier(TM_NOTIFIER_CAPS_PER_TICKET="10:2", TM_NOTIFIER_CAPS_PER_RECIPIENT="10:3")
    supervisor, customer = "wang.fang@agents.ticketmesh.test", "looping.customer@example.com"
    decisions = ("notification_queued", "notification_skipped")
    with structlog.testing.capture_logs() as logs:
        for ticket in ("TM-20070", "TM-20070", "TM-20070", "TM-20071", "TM-20072", "TM-20073"):
            await publish("sla_watcher", "sla_breached", sla_breached(ticket))  # a fresh event id each
        for n in range(4):  # four new tickets from one address in ten minutes: acks to an autoresponder?
            await publish("intake_email", "ticket_received", ticket_received(f"TM-2008{n}", email=customer))
        for n in range(4):  # an agent writing four times in ten minutes is a conversation
            await publish("agent_desk", "agent_replied", agent_replied("TM-20070", reply_id=f"r{n}"))
        await wait_until(lambda: len([e for e in logs if e["event"] in decisions]) == 14, message="all decided")
        await wait_until(lambda: len(relay.deliveries) == 12, message="twelve mails out")
    skipped = [(e["kind"], e["scope"], e["window"]) for e in logs
               if e["event"] == "notification_skipped" and e["reason"] == "loop_cap"]
    # The third notice about TM-20070 (its queue is handled in publishing order), the fourth ack.
    assert sorted(skipped) == [("sla_breached", "per_ticket", "2/10min"), ("ticket_ack", "per_recipient", "3/10min")]
    notices, acks, replies = relay.to(supervisor), relay.to(customer), relay.to("zhang.wei@example.com")
    assert len(notices) == 5 and len(acks) == 3 and len(replies) == 4  # five notices: no all-tickets cap
    for notice in notices:
        mail = notice.message
        assert (mail["Auto-Submitted"], mail["X-Auto-Response-Suppress"], mail["Precedence"], mail["X-Loop"]) == (
            "auto-generated", "All", "bulk", "support@ticketmesh.test")
    for ack in acks:
        assert (ack.message["Auto-Submitted"], ack.message["X-Loop"]) == ("auto-replied", "support@ticketmesh.test")
    for reply in replies:
        assert all(reply.message[h] is None for h in ("Auto-Submitted", "Precedence", "X-Loop"))


async def test_automatic_mail_never_goes_to_system_or_our_own_addresses(relay, start_notifier, publish):
    await start_notifier()
    refused = ["10000@qq.com", "bounces+1234-ab=x.example@sendgrid.net", "support-team-request@lists.example.org",
               "support+TM-10001.a1b2c3@ticketmesh.test", "Do-Not-Reply@bank.example"]
    with structlog.testing.capture_logs() as logs:
        for n, address in enumerate(refused):
            await publish("intake_email", "ticket_received", ticket_received(f"TM-2008{n}", email=address))
        await publish("intake_email", "ticket_received", ticket_received("TM-20089", email="sentinel@example.com"))
        await wait_until(lambda: relay.deliveries, message="sentinel ack")
    assert [e["reason"] for e in logs if e["event"] == "notification_skipped"] == [
        "system_address", "system_address", "system_address", "own_address", "system_address"]
    assert relay.rcpt_seen == ["sentinel@example.com"]
