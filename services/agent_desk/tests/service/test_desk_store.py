"""DeskStore's optimistic view changes, against real Redis: a change that meets another
replica's write is applied again on top of it, view and indexes together."""
from __future__ import annotations

import asyncio

from services.agent_desk import tickets
from services.agent_desk.store import DeskStore
from services.agent_desk.tests.factories import ticket_assigned, ticket_queued, ticket_received
from shared import events as ev
from shared.redis_store import async_client


async def test_a_change_meeting_another_write_is_applied_again_on_top_of_it(redis_url, redis_client):
    client = async_client(redis_url)
    store = DeskStore(client)
    received = ev.parse_event(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, ticket_received("TM-7001"))
    assigned = ev.parse_event(ev.DISPATCHER, ev.TICKET_ASSIGNED, ticket_assigned("TM-7001", "li.na"))
    await store.add_ticket(tickets.view_from_received(received))
    key = "tm:agent_desk:ticket:TM-7001"
    seen: list[list[str]] = []

    def assign(view: tickets.TicketView) -> tickets.TicketView:
        seen.append(view.tags)
        if len(seen) == 1:  # another replica writes the view between our read and our write
            redis_client.set(key, view.model_copy(update={"tags": ["vip"]}).model_dump_json())
        return tickets.with_assignment(view, assigned)

    before, after = await store.change_ticket("TM-7001", assign)
    assert seen == [[], ["vip"]]  # read again, applied again
    assert before.tags == ["vip"] and after.agent_id == "li.na"
    stored = await store.ticket("TM-7001")
    assert stored == after and stored.tags == ["vip"] and redis_client.ttl(key) > 0
    assert redis_client.zrange("tm:agent_desk:worklist:li.na", 0, -1) == ["TM-7001"]  # indexes with the view
    await client.aclose()


async def test_concurrent_changes_of_one_ticket_all_land_with_their_indexes(redis_url, redis_client):
    client = async_client(redis_url)
    store = DeskStore(client)
    for i in range(20):
        await store.add_ticket(tickets.view_from_received(
            ev.parse_event(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, ticket_received(f"TM-72{i:02d}"))))
    queued = [ev.parse_event(ev.DISPATCHER, ev.TICKET_QUEUED, ticket_queued(f"TM-72{i:02d}")) for i in range(20)]
    # Each ticket changed by three writers at once: one queues it, two tag it.
    changes = []
    for event in queued:
        changes.append(store.change_ticket(event.ticket_id, lambda v, e=event: tickets.with_queued(v, e)))
        for tag in ("a", "b"):
            changes.append(store.change_ticket(event.ticket_id,
                                               lambda v, t=tag: v.model_copy(update={"tags": sorted({*v.tags, t})})))
    await asyncio.gather(*changes)
    for event in queued:
        view = await store.ticket(event.ticket_id)
        assert view.status == "queued" and view.tags == ["a", "b"], view
    assert sorted(redis_client.zrange("tm:agent_desk:queued", 0, -1)) == sorted(e.ticket_id for e in queued)
    await client.aclose()
