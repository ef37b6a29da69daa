"""The notifier's audience keys on a real Redis: the ack join, the sweeper's leases and
batches, presence ordering, robot claims and the per-robot rate."""
from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest

from services.notifier import audience as aud
from services.notifier import messages
from services.notifier.audience import AudienceStore, Classification
from services.notifier.service import ACK_SWEEP_BATCH, Notifier
from services.notifier.store import NotificationStore
from services.notifier.tests.factories import NOW, parse, ticket_received
from shared.redis_store import async_client

from .update_fixtures import Clock


@pytest.fixture
async def redis(redis_url):
    client = async_client(redis_url)
    yield client
    await client.aclose()


def _contact(ticket_id: str, email: str | None = "a@example.com") -> messages.Contact:
    return messages.Contact.from_ticket(parse("intake_email", "ticket_received",
                                              ticket_received(ticket_id, email=email)))


async def test_whichever_half_comes_second_sees_the_first(redis):
    store = AudienceStore(redis)
    classification = Classification(priority="P1", customer_tier="vip", received_at=NOW)
    assert await store.save_classification("TM-1", classification) is None  # no contact yet
    assert await store.save_contact(_contact("TM-1"), received_event_id="e1", trace_id="t1",
                                    received_at=NOW) == classification
    assert await store.save_contact(_contact("TM-2"), received_event_id="e2", trace_id="t2", received_at=NOW) is None
    record = await store.save_classification("TM-2", classification)
    assert record is not None and record.received_event_id == "e2" and record.classification == classification
    assert record.contact == _contact("TM-2") and not record.acked and not record.csat_answered
    await store.mark_csat_answered("TM-2")
    assert (await store.contact("TM-2")).csat_answered
    assert await redis.ttl("tm:notifier:contact:TM-2") > aud.CONTACT_TTL_SECONDS - 60


async def test_due_acks_are_leased_not_popped(redis):
    store = AudienceStore(redis)
    await store.ack_later("TM-1", 100.0)
    await store.ack_later("TM-2", 200.0)
    await store.ack_later("TM-1", 500.0)  # a redelivery does not push the deadline
    assert await store.lease_due_acks(150.0) == ["TM-1"]
    assert await store.lease_due_acks(150.0 + aud.ACK_LEASE_SECONDS - 1) == ["TM-2"]  # TM-1 is leased
    assert await store.lease_due_acks(150.0 + aud.ACK_LEASE_SECONDS) == ["TM-1"]  # its sweeper died: again
    await store.mark_acked("TM-1")
    assert await store.acks_waiting() == 1


async def test_a_sweep_works_through_more_than_one_batch(redis):
    store = AudienceStore(redis)
    count = ACK_SWEEP_BATCH + 5
    for n in range(count):  # customers without an address: acknowledged as "nothing to send"
        ticket_id = f"TM-{5000 + n}"
        await store.save_contact(_contact(ticket_id, email=None), received_event_id=f"e{n}", trace_id="t",
                                 received_at=NOW)
        await store.ack_later(ticket_id, NOW.timestamp())
    notifier = Notifier(store=NotificationStore(redis), outbox=None, publisher=None,  # type: ignore[arg-type]
                        sender=messages.Sender("support@ticketmesh.test"), supervisor_email="s@ticketmesh.test",
                        supervisor_locale="zh-CN", zone=ZoneInfo("Asia/Shanghai"), audience=store,
                        clock=Clock(NOW + timedelta(seconds=1)))
    assert await notifier.sweep_acks() == count
    assert await store.acks_waiting() == 0
    assert all([(await store.contact(f"TM-{5000 + n}")).acked for n in range(count)])


async def test_presence_keeps_the_newest_event(redis):
    store = AudienceStore(redis)
    assert await store.presence("li.na") is None
    assert await store.set_presence("li.na", "offline", 200.0)
    assert not await store.set_presence("li.na", "online", 100.0)  # older, delivered late
    assert await store.presence("li.na") == "offline"
    assert await store.set_presence("li.na", "online", 300.0)
    assert await store.presence("li.na") == "online"


async def test_robot_messages_are_claimed_once_and_rate_limited_per_minute(redis):
    store = AudienceStore(redis)
    assert await store.claim_robot_message("n1") == aud.CLAIMED
    assert await store.claim_robot_message("n1") == aud.SENDING
    await store.release_robot_message("n1")
    assert await store.claim_robot_message("n1") == aud.CLAIMED
    await store.mark_robot_message_sent("n1")
    assert await store.claim_robot_message("n1") == aud.SENT
    minute = 60.0 * 29_000_000
    assert [await store.take_robot_rate("duty", 2, minute + s) for s in (1, 2, 3)] == [True, True, False]
    assert await store.take_robot_rate("other", 2, minute + 3)  # per robot
    assert await store.take_robot_rate("duty", 2, minute + 61)  # the next minute
