"""No acknowledgement for a contact the dispatcher folds into the customer's open ticket (real SMTP
sink, RabbitMQ vhost and Redis; TM_PREFETCH=1, so a later sentinel mail means the earlier events
are done)."""
from __future__ import annotations

from datetime import datetime, timezone

from services.notifier.service import NOTIFIER_KEY
from services.notifier.tests.factories import ticket_received
from shared.customer_identity import ContactIdentifiers, Identifier
from shared.customer_store import ATTACHED, LINKED, AsyncCustomerReader, ContactOutcome, CustomerStore
from shared.testing.asyncio_helpers import wait_until

from .test_notifier_service import mails_to, notifier, publish, sink, smtp_port  # noqa: F401 - fixtures

ZHANG = Identifier("email", "zhang.wei@example.com")


def fresh(ticket_id: str, **extra) -> dict:
    """A ticket_received published just now (the notifier waits for a decision only so long)."""
    body = ticket_received(ticket_id, **extra)
    body["customer"]["verified"] = ["email"]  # the mail's sender, as intake_email says
    body["occurred_at"] = datetime.now(timezone.utc).isoformat()
    return body


class CountingReader(AsyncCustomerReader):
    def __init__(self, client):
        super().__init__(client)
        self.asked: list[str] = []

    async def contact(self, ticket_id):
        self.asked.append(ticket_id)
        return await super().contact(ticket_id)


async def test_an_attached_contact_gets_no_ack_and_one_that_may_be_waits_for_the_decision(
        sink, notifier, publish, redis_client):
    await sink.start()
    customers = CustomerStore(redis_client)
    profile = customers.resolve(ContactIdentifiers(verified=(ZHANG,)), now=1.0).profile_id
    customers.record_ticket(profile, "TM-1", channel="phone", received=datetime.now(timezone.utc).timestamp())
    reader = CountingReader(notifier.app[NOTIFIER_KEY].customers._client)
    notifier.app[NOTIFIER_KEY].customers = reader

    customers.decide_contact("TM-2", ContactOutcome(ATTACHED, profile, "TM-1", 1.0))
    await publish("intake_email", "ticket_received", fresh("TM-2"))
    await publish("intake_email", "ticket_received", fresh("TM-8", email="sentinel@example.com"))
    await wait_until(lambda: mails_to(sink, "sentinel@example.com"), message="sentinel mail")
    assert mails_to(sink, "zhang.wei@example.com") == []  # folded into TM-1: no ack with a number of its own

    # No decision yet, and the customer has an open phone ticket: the ack waits for the dispatcher.
    await publish("intake_email", "ticket_received", fresh("TM-3"))
    await wait_until(lambda: reader.asked.count("TM-3") >= 2, message="the notifier asked again")
    assert mails_to(sink, "zhang.wei@example.com") == []
    customers.decide_contact("TM-3", ContactOutcome(LINKED, profile, "TM-1", 2.0))  # its own ticket after all
    acks = await wait_until(lambda: mails_to(sink, "zhang.wei@example.com"), message="ack after the decision")
    assert acks[0].subject.startswith("[#TM-3]")

    # A customer with no open ticket elsewhere is acknowledged at once, decision or not.
    await publish("intake_email", "ticket_received", fresh("TM-4", email="new.customer@example.com"))
    await wait_until(lambda: mails_to(sink, "new.customer@example.com"), message="ack for a new customer")
    assert reader.asked.count("TM-4") == 1
