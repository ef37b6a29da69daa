"""No acknowledgement for a contact the dispatcher folds into the customer's open ticket (real SMTP
sink, RabbitMQ vhost and Redis; the test moves the notifier's clock to drive its ack sweeper)."""
from __future__ import annotations

from datetime import timedelta

from services.notifier.tests.factories import NOW, ticket_received
from services.notifier.tests.update_factories import ticket_classified
from shared import events as ev
from shared.testing.asyncio_helpers import wait_until

from .update_fixtures import Clock, make_notifier, mails_to, one_mail_to  # noqa: F401 - fixtures


def attached(ticket_id: str, mode: str) -> dict:
    return ev.make_event(ev.DISPATCHER, ev.TICKET_ATTACHED, now=NOW, trace_id="trace-" + ticket_id,
                         ticket_id=ticket_id, into_ticket_id="TM-1", channel="email",
                         customer={"email": "zhang.wei@example.com", "verified": ["email"]}, customer_id="CU-1",
                         subject="发票抬头错误", text="还是没有收到", received_at=NOW, mode=mode)


async def test_a_contact_folded_into_an_open_ticket_is_never_acknowledged(sink, make_notifier, publish, redis_client):
    await sink.start()
    clock = Clock(NOW + timedelta(seconds=2))
    _, notifier = await make_notifier(clock)
    # Folded (mode attach): whichever of the two events comes first, no ack, not even the sweeper's.
    await publish("dispatcher", "ticket_attached", attached("TM-30001", "attach"))
    await wait_until(lambda: redis_client.hget("tm:notifier:contact:TM-30001", "acked"), message="ack skipped")
    await publish("intake_email", "ticket_received", ticket_received("TM-30001"))
    await publish("intake_email", "ticket_received", ticket_received("TM-30002", email="late.one@example.com"))
    await publish("dispatcher", "ticket_attached", attached("TM-30002", "attach"))
    # Linked (mode link): a ticket of its own, acknowledged as usual once classified.
    await publish("intake_email", "ticket_received", ticket_received("TM-30003", email="linked@example.com"))
    await publish("dispatcher", "ticket_attached", attached("TM-30003", "link"))
    await publish("dispatcher", "ticket_classified", ticket_classified("TM-30003"))
    await one_mail_to(sink, "linked@example.com", "ack of the linked contact")
    await wait_until(lambda: redis_client.hget("tm:notifier:contact:TM-30002", "acked"), message="late skip")

    # An ordinary ticket, never classified: the sweeper acknowledges it once the wait is over,
    # and in the same sweep finds nothing to send for the two folded contacts.
    await publish("intake_email", "ticket_received", ticket_received("TM-30004", email="sentinel@example.com"))
    await wait_until(lambda: redis_client.hget("tm:notifier:contact:TM-30004", "channel"), message="sentinel kept")
    clock.now = NOW + timedelta(seconds=2 + 61)  # past the wait for a classification
    await notifier.sweep_acks()
    await one_mail_to(sink, "sentinel@example.com", "the sweeper's ack of an ordinary ticket")
    assert mails_to(sink, "zhang.wei@example.com") == [] and mails_to(sink, "late.one@example.com") == []
    assert redis_client.zscore("tm:notifier:ack_due", "TM-30001") is None
