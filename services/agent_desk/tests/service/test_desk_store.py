"""DeskStore's optimistic view changes, against real Redis: a change that meets another
replica's write is applied again on top of it, view and indexes together; an event's history
record goes in the same round trip as its view change, once."""
from __future__ import annotations

import asyncio

import pytest
import redis.asyncio.connection

from services.agent_desk import history, tickets
from services.agent_desk.history_store import HistoryStore
from services.agent_desk.store import DeskStore
from services.agent_desk.tests.factories import ticket_assigned, ticket_classified, ticket_queued, ticket_received
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


class _RoundTrips:
    """Counts the writes the client sends to Redis (one per command or pipeline: a round trip)."""

    def __init__(self, monkeypatch):
        self.count = 0
        real = redis.asyncio.connection.AbstractConnection.send_packed_command

        async def counted(connection, command, check_health=True):
            self.count += 1
            return await real(connection, command, check_health)

        monkeypatch.setattr(redis.asyncio.connection.AbstractConnection, "send_packed_command", counted)

    def since(self, start: int) -> int:
        return self.count - start


def _history(client) -> HistoryStore:
    return HistoryStore(client, event_ttl=86400, fact_ttl=86400, max_events=100)


def _record(store: HistoryStore, source: str, event_type: str, event: ev.Envelope):
    return store.script_call(history.entry_of(source, event_type, event))


async def test_each_recorded_event_records_and_changes_the_view_in_one_round_trip_and_once(
        redis_url, redis_client, monkeypatch):
    client = async_client(redis_url)
    await client.ping()  # connected before counting
    store, recorder = DeskStore(client), _history(client)
    received = ev.parse_event(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, ticket_received("TM-7301"))
    classified = ev.parse_event(ev.DISPATCHER, ev.TICKET_CLASSIFIED, ticket_classified("TM-7301"))
    assigned = ev.parse_event(ev.DISPATCHER, ev.TICKET_ASSIGNED, ticket_assigned("TM-7301", "li.na"))
    trips = _RoundTrips(monkeypatch)
    for delivery in (1, 2):  # the second is a redelivery of each event
        start = trips.count
        recorded, added = await store.add_ticket_after(_record(recorder, ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, received),
                                                       tickets.view_from_received(received))
        assert (recorded, added) == ((1, True) if delivery == 1 else (0, False))
        recorded, _, view = await store.change_ticket_after(
            _record(recorder, ev.DISPATCHER, ev.TICKET_CLASSIFIED, classified), "TM-7301",
            lambda v: tickets.with_classification(v, classified))
        assert recorded == (1 if delivery == 1 else 0) and view.category == "billing"
        recorded, _, view = await store.change_ticket_after(
            _record(recorder, ev.DISPATCHER, ev.TICKET_ASSIGNED, assigned), "TM-7301", lambda v: tickets.with_assignment(v, assigned),
            decision=tickets.decision_record(assigned))
        assert recorded == (1 if delivery == 1 else 0) and view.agent_id == "li.na"
        if delivery == 1:
            assert trips.since(start) == 3  # one per event: no read of the view this replica wrote
    records, facts = await recorder.ticket("TM-7301")
    assert len(records) == 3 and facts["assignments"] == "1"  # a redelivery is recorded once
    assert await store.ticket("TM-7301") == view
    assert redis_client.zrange("tm:agent_desk:worklist:li.na", 0, -1) == ["TM-7301"]
    assert [d["ticket_id"] for d in await store.recent_decisions()] == ["TM-7301"]
    await client.aclose()


async def test_a_change_made_by_another_replica_since_this_one_wrote_is_built_on(redis_url, redis_client):
    mine, theirs = async_client(redis_url), async_client(redis_url)
    here, there = DeskStore(mine), DeskStore(theirs)
    received = ev.parse_event(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, ticket_received("TM-7302"))
    await here.add_ticket(tickets.view_from_received(received))
    tag = lambda t: lambda v: v.model_copy(update={"tags": sorted({*v.tags, t})})  # noqa: E731
    await there.change_ticket("TM-7302", tag("vip"))  # this replica's last write is now old
    _, after = await here.change_ticket("TM-7302", tag("urgent"))
    assert after.tags == ["urgent", "vip"] and (await here.ticket("TM-7302")).tags == ["urgent", "vip"]
    # A change this replica's old write says is made already is checked on the stored view.
    redis_client.set("tm:agent_desk:ticket:TM-7302",
                     after.model_copy(update={"tags": ["vip"]}).model_dump_json(), ex=3600)
    _, after = await here.change_ticket("TM-7302", tag("urgent"))
    assert (await here.ticket("TM-7302")).tags == ["urgent", "vip"]
    # ... and a view gone since is missing, whatever this replica wrote.
    redis_client.delete("tm:agent_desk:ticket:TM-7302")
    with pytest.raises(tickets.TicketNotStored):
        await here.change_ticket("TM-7302", tag("late"))
    await mine.aclose()
    await theirs.aclose()


async def test_a_script_redis_lost_is_loaded_again(redis_url, redis_client):
    client = async_client(redis_url)
    store, recorder = DeskStore(client), _history(client)
    received = ev.parse_event(ev.INTAKE_EMAIL, ev.TICKET_RECEIVED, ticket_received("TM-7303"))
    classified = ev.parse_event(ev.DISPATCHER, ev.TICKET_CLASSIFIED, ticket_classified("TM-7303"))
    await store.add_ticket(tickets.view_from_received(received))
    redis_client.script_flush()
    recorded, _, view = await store.change_ticket_after(_record(recorder, ev.DISPATCHER, ev.TICKET_CLASSIFIED, classified), "TM-7303",
                                                        lambda v: tickets.with_classification(v, classified))
    assert recorded == 1 and (await store.ticket("TM-7303")) == view and view.category == "billing"
    assert len((await recorder.ticket("TM-7303"))[0]) == 1
    await client.aclose()
