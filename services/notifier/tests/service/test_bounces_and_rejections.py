"""Bounced addresses get no more mail; refused inbound mail gets a polite answer.

Real SMTP sink, RabbitMQ vhost and Redis (fixtures in conftest.py). TM_PREFETCH=1 and one
sender: a later sentinel mail on the same queue means every event published before it is done.
"""
from __future__ import annotations

from datetime import timedelta

import structlog

from services.notifier import messages
from services.notifier.tests.factories import NOW, agent_replied, mail_bounced, mail_rejected, ticket_received
from services.notifier.tests.helpers import mails_to, outbox_record
from shared.testing.asyncio_helpers import wait_until

DAY = 24 * 3600


def mailed_before(redis_client, address: str, ticket_id: str = "TM-10001") -> None:
    """As if we had mailed ``address`` about the ticket: a bounce for it is believed only then."""
    redis_client.sadd(f"tm:notifier:recipients:{ticket_id}", address.lower())


async def test_a_hard_bounce_stops_all_mail_to_the_address_for_60_days(sink, notifier, publish, redis_client):
    await sink.start()
    mailed_before(redis_client, "zhang.wei@example.com")
    with structlog.testing.capture_logs() as logs:
        await publish("intake_email", "mail_bounced", mail_bounced("Zhang.Wei@example.com", hard=True))
        key = "tm:notifier:bounced:zhang.wei@example.com"
        await wait_until(lambda: redis_client.get(key) == "hard", message="address marked bounced")
        assert 59 * DAY < redis_client.ttl(key) <= 60 * DAY

        await publish("intake_email", "ticket_received", ticket_received("TM-10020"))
        await publish("intake_email", "ticket_received", ticket_received("TM-10021", email="sentinel@example.com"))
        await wait_until(lambda: mails_to(sink, "sentinel@example.com"), message="sentinel ack")
    assert mails_to(sink, "zhang.wei@example.com") == []
    skipped = [e for e in logs if e["event"] == "notification_skipped"]
    assert [(e["kind"], e["reason"]) for e in skipped] == [("ticket_ack", "bounced_address")]


async def test_three_soft_bounces_within_72_hours_suppress_for_a_day_counting_each_bounce_once(
        sink, notifier, publish, redis_client):
    await sink.start()
    address, key = "full.box@example.com", "tm:notifier:bounced:full.box@example.com"
    counted = "tm:notifier:soft_bounces:full.box@example.com"
    mailed_before(redis_client, address)
    old = mail_bounced(address, hard=False, event_id="soft-0", at=NOW - timedelta(hours=80))
    first = mail_bounced(address, hard=False, event_id="soft-1")
    for body in (old, first, first, mail_bounced(address, hard=False, event_id="soft-2")):
        await publish("intake_email", "mail_bounced", body)  # the redelivered one and the stale one don't count
    await wait_until(lambda: redis_client.zrange(counted, 0, -1) == ["soft-1", "soft-2"], message="two counted")
    assert redis_client.get(key) is None

    await publish("intake_email", "ticket_received", ticket_received("TM-10022", email=address))
    await wait_until(lambda: mails_to(sink, address), message="still mailed after two soft bounces")

    await publish("intake_email", "mail_bounced", mail_bounced(address, hard=False, event_id="soft-3"))
    await wait_until(lambda: redis_client.get(key) == "soft", message="suppressed after the third")
    assert 23 * 3600 < redis_client.ttl(key) <= DAY
    await publish("intake_email", "ticket_received", ticket_received("TM-10023", email=address))
    await publish("intake_email", "ticket_received", ticket_received("TM-10024", email="sentinel@example.com"))
    await wait_until(lambda: mails_to(sink, "sentinel@example.com"), message="sentinel ack")
    assert len(mails_to(sink, address)) == 1


async def test_a_soft_bounce_does_not_shorten_a_hard_one(notifier, publish, redis_client):
    address = "gone@example.com"
    mailed_before(redis_client, address)
    await publish("intake_email", "mail_bounced", mail_bounced(address, hard=True))
    for n in range(3):
        await publish("intake_email", "mail_bounced", mail_bounced(address, hard=False, event_id=f"s{n}"))
    await wait_until(lambda: redis_client.zcard(f"tm:notifier:soft_bounces:{address}") == 3, message="soft counted")
    assert redis_client.get(f"tm:notifier:bounced:{address}") == "hard"
    assert redis_client.ttl(f"tm:notifier:bounced:{address}") > 59 * DAY


async def test_refused_mail_gets_one_polite_rejection_and_never_to_system_or_bounced_addresses(
        sink, notifier, publish, redis_client):
    await sink.start()
    mailed_before(redis_client, "bounced@example.com")
    await publish("intake_email", "mail_bounced", mail_bounced("bounced@example.com", hard=True))
    await wait_until(lambda: redis_client.exists("tm:notifier:bounced:bounced@example.com"), message="bounce recorded")

    body = mail_rejected()
    await publish("intake_email", "mail_rejected", body)
    sent = await wait_until(lambda: mails_to(sink, "zhang.wei@example.com"), message="rejection mail")
    rejection = sent[0]
    assert rejection.subject == "您的邮件未能送达：邮件过大"
    assert "合同扫描件" in rejection.text and "30 MB" in rejection.text and "10 MB" in rejection.text
    assert rejection.headers["Auto-Submitted"] == "auto-replied"
    assert rejection.headers["In-Reply-To"] == "<big-1@example.com>"
    await wait_until(lambda: outbox_record(redis_client, body, messages.KIND_MAIL_REJECTED).get("announced") == "1",
                     message="recorded as done")

    await publish("intake_email", "mail_rejected", body)  # redelivered: no second mail
    await publish("intake_email", "mail_rejected", mail_rejected("MAILER-DAEMON@example.com"))
    await publish("intake_email", "mail_rejected", mail_rejected("no-reply@shop.example"))
    await publish("intake_email", "mail_rejected", mail_rejected("bounced@example.com"))
    await publish("intake_email", "mail_rejected", mail_rejected("sentinel@example.com", language="en", name="Ann"))
    sentinel = await wait_until(lambda: mails_to(sink, "sentinel@example.com"), message="sentinel rejection")
    assert sentinel[0].subject == "Your message was not delivered: too large"
    assert [m.envelope_to for m in sink.messages()] == [["zhang.wei@example.com"], ["sentinel@example.com"]]


async def test_a_bounce_of_our_mail_about_the_ticket_suppresses_the_address(sink, notifier, publish, redis_client):
    await sink.start()
    await publish("intake_email", "ticket_received", ticket_received("TM-10040", email="real.bounce@example.com"))
    await wait_until(lambda: mails_to(sink, "real.bounce@example.com"), message="ack mailed")
    assert redis_client.smembers("tm:notifier:recipients:TM-10040") == {"real.bounce@example.com"}
    assert 179 * DAY < redis_client.ttl("tm:notifier:recipients:TM-10040") <= 180 * DAY

    await publish("intake_email", "mail_bounced", mail_bounced("Real.Bounce@example.com", ticket_id="TM-10040"))
    await wait_until(lambda: redis_client.get("tm:notifier:bounced:real.bounce@example.com") == "hard",
                     message="address suppressed")
    await publish("agent_desk", "agent_replied", agent_replied("TM-10040", email="real.bounce@example.com"))
    await publish("agent_desk", "agent_replied", agent_replied("TM-10041", email="sentinel@example.com"))
    await wait_until(lambda: mails_to(sink, "sentinel@example.com"), message="sentinel reply")
    assert len(mails_to(sink, "real.bounce@example.com")) == 1  # the ack only; the reply was skipped


async def test_a_forged_or_foreign_bounce_suppresses_nobody_and_the_mail_still_goes_out(
        sink, notifier, publish, redis_client):
    """A delivery report anyone can send: naming no ticket of ours, or an address we never
    mailed about the ticket it names, it must not stop our mail (agent replies included)."""
    await sink.start()
    await publish("intake_email", "ticket_received", ticket_received("TM-10050", email="customer@example.com"))
    await wait_until(lambda: mails_to(sink, "customer@example.com"), message="ack mailed")
    with structlog.testing.capture_logs() as logs:
        await publish("intake_email", "mail_bounced", mail_bounced("victim@example.com", ticket_id=None,
                                                                   event_id="forged-1"))
        await publish("intake_email", "mail_bounced", mail_bounced("victim@example.com", "customer@example.com",
                                                                   ticket_id="TM-10050", event_id="forged-2"))
        await publish("intake_email", "mail_bounced", mail_bounced("bystander@example.com", ticket_id="TM-10050",
                                                                   hard=False, event_id="forged-3"))
        await wait_until(lambda: redis_client.exists("tm:notifier:bounced:customer@example.com"),
                         message="the one address we mailed about TM-10050 is believed")

        await publish("agent_desk", "agent_replied", agent_replied("TM-10051", email="victim@example.com"))
        await publish("intake_email", "ticket_received", ticket_received("TM-10052", email="bystander@example.com"))
        await wait_until(lambda: mails_to(sink, "victim@example.com") and mails_to(sink, "bystander@example.com"),
                         message="mail still goes to the addresses the forged bounces named")
    assert redis_client.keys("tm:notifier:bounced:*") == ["tm:notifier:bounced:customer@example.com"]
    assert redis_client.keys("tm:notifier:soft_bounces:*") == []
    untrusted = [(e["recipient"], e["why"]) for e in logs if e["event"] == "bounce_not_trusted"]
    assert untrusted == [("v***@example.com", "no_ticket_of_ours"), ("v***@example.com", "not_mailed_for_ticket"),
                         ("b***@example.com", "not_mailed_for_ticket")]
