"""What a ticket costs the notifier in Redis round trips on the mesh's hot path (every ticket
passes through three of its handlers): each round trip is a send and a receive on both ends."""
from __future__ import annotations

from datetime import timezone

import redis.asyncio

from services.notifier import messages
from services.notifier.audience import AudienceStore
from services.notifier.outbox import Outbox
from services.notifier.service import Notifier
from services.notifier.store import NotificationStore
from services.notifier.tests.factories import ticket_received
from services.notifier.tests.update_factories import presence, ticket_assigned, ticket_classified
from shared import events as ev


class CountingPipeline(redis.asyncio.client.Pipeline):
    async def execute(self, raise_on_error: bool = True):
        self.counter.round_trips += 1
        return await super().execute(raise_on_error)


class CountingRedis(redis.asyncio.Redis):
    """A client that counts what it sends: one per command, one per pipeline."""

    round_trips = 0

    async def execute_command(self, *args, **options):
        self.round_trips += 1
        return await super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint=None) -> CountingPipeline:
        pipe = CountingPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.counter = self
        return pipe


def _event(source: str, event_type: str, body: dict) -> ev.Envelope:
    return ev.parse_event(source, event_type, body)


async def test_a_chat_ticket_assigned_to_an_online_agent_costs_two_round_trips(redis_url):
    client = CountingRedis.from_url(redis_url, decode_responses=True)
    notifier = Notifier(store=NotificationStore(client), outbox=Outbox(client), publisher=None,
                        sender=messages.Sender("support@ticketmesh.test"), supervisor_email="lead@ticketmesh.test",
                        supervisor_locale="zh-CN", zone=timezone.utc, audience=AudienceStore(client))
    try:
        await notifier.track_agent_presence(_event("agent_desk", "agent_presence_changed", presence("li.na", "online")))
        client.round_trips = 0
        await notifier.ack_ticket_received(_event("intake_chat", "ticket_received",
                                                  ticket_received("TM-40001", channel="chat")))
        await notifier.ack_classified_ticket(_event("dispatcher", "ticket_classified",
                                                    ticket_classified("TM-40001", channel="chat")))
        await notifier.notify_ticket_assigned(_event("dispatcher", "ticket_assigned",
                                                     ticket_assigned("TM-40001", "li.na")))
        # the contact (kept for later mail to the customer), then the assignee's presence
        assert client.round_trips == 2
        assert await client.hget("tm:notifier:contact:TM-40001", "channel") == "chat"
    finally:
        await client.aclose()
