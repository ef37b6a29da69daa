"""HistoryStore on real Redis: any arrival order gives the same facts, an event counts once, the
per-ticket cap and the lifetimes hold, and the backlog index forgets what expired."""
from __future__ import annotations

import asyncio
import random
from datetime import date, datetime, timedelta, timezone

import pytest
import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from services.agent_desk import history
from services.agent_desk.history_store import MAX_BATCH, HistoryStore
from services.agent_desk.tests import report_day
from shared import events as ev
from shared.redis_store import async_client

DAY = date(2026, 3, 2)
NOW = datetime(2026, 3, 3, 12, tzinfo=timezone.utc)
EVENT_TTL, FACT_TTL = 30 * 86400, 180 * 86400


@pytest.fixture
async def client(redis_url):
    client = async_client(redis_url)
    yield client
    await client.aclose()


def _store(client, max_events: int = 500) -> HistoryStore:
    return HistoryStore(client, event_ttl=EVENT_TTL, fact_ttl=FACT_TTL, max_events=max_events)


def _entries() -> list[history.Entry]:
    return [history.entry_of(s, t, ev.parse_event(s, t, b)) for s, t, b in report_day.scripted_day(DAY)]


async def _snapshot(client, store: HistoryStore) -> dict:
    tickets = [f"TM-2000{n}" for n in range(1, 6)]
    return {
        "facts": {t: (await store.ticket(t))[1] for t in tickets},
        "records": {t: (await store.ticket(t))[0] for t in tickets},
        "day": await client.zrange(f"tm:history:day:{DAY.isoformat()}", 0, -1, withscores=True),
        "open": await client.zrange("tm:history:open", 0, -1),
    }


async def test_any_arrival_order_and_redeliveries_give_the_same_history(client):
    store, entries = _store(client), _entries()
    added = [await store.record(e) for e in entries]
    assert added.count(False) == 1  # the scripted redelivery of TM-20001's first reply
    in_order = await _snapshot(client, store)
    assert in_order["open"] == ["TM-20004", "TM-20005"]
    assert [t for t, _ in in_order["day"]] == ["TM-20001", "TM-20002", "TM-20003", "TM-20004", "TM-20005"]
    facts = in_order["facts"]["TM-20001"]
    assert (facts["first_response_at"], facts["replies"], facts["agent"], facts["csat"]) == (
        repr(datetime(2026, 3, 2, 9, 4, tzinfo=timezone.utc).timestamp()), "2", "li.na", "5")
    assert facts["trace_id"] == "trace-TM-20001" and facts["channel"] == "email" and facts["group"] == "billing"

    for seed in (1, 2, 3):
        await client.flushdb()
        shuffled = entries * 2          # everything delivered twice, in any order
        random.Random(seed).shuffle(shuffled)
        assert sum([await store.record(e) for e in shuffled]) == sum(len(r) for r in in_order["records"].values())
        assert await _snapshot(client, store) == in_order, f"seed {seed}"


async def test_events_recorded_at_once_are_written_together_each_counted_once(client):
    store, entries = _store(client), _entries()
    sequential = []
    for entry in entries:
        sequential.append(await store.record(entry))
    expected = await _snapshot(client, store)
    await client.flushdb()
    writes: list[int] = []
    write = store._write

    async def counted(batch):
        writes.append(len(batch))
        return await write(batch)

    store._write = counted  # type: ignore[method-assign]
    together = await asyncio.gather(*(store.record(e) for e in entries + entries[:10]))
    assert together == sequential + [False] * 10
    assert len(writes) < len(entries) / 5 and max(writes) <= MAX_BATCH
    assert await _snapshot(client, store) == expected


async def test_a_failed_write_fails_each_of_its_callers():
    broken = redis.asyncio.Redis(port=1, retry=Retry(NoBackoff(), 0))   # nothing listens there; no retries
    store = _store(broken)
    results = await asyncio.gather(*(store.record(e) for e in _entries()[:3]), return_exceptions=True)
    assert all(isinstance(r, redis.exceptions.ConnectionError) for r in results)
    await broken.aclose()


async def test_records_are_capped_per_ticket_and_every_key_has_its_lifetime(client):
    store = _store(client, max_events=3)
    entries = [e for e in _entries() if e.ticket_id == "TM-20003"]
    for entry in entries:
        await store.record(entry)
    records, facts = await store.ticket("TM-20003")
    assert [history.path("TM-20003", records).events[i]["type"] for i in range(3)] == [
        "agent_replied", "ticket_resolved", "csat_submitted"]   # the latest three
    assert facts["trimmed"] == str(len(entries) - 3)
    assert facts["breached:first_response"] == "1" and facts["escalations"] == "1"  # facts keep everything
    ttl = {key: await client.ttl(key) for key in (
        "tm:history:ids:TM-20003", "tm:history:events:TM-20003", "tm:history:facts:TM-20003",
        f"tm:history:day:{DAY.isoformat()}", "tm:history:trace:trace-TM-20003")}
    assert EVENT_TTL - 5 < ttl["tm:history:ids:TM-20003"] <= EVENT_TTL
    assert EVENT_TTL - 5 < ttl["tm:history:events:TM-20003"] <= EVENT_TTL
    assert FACT_TTL - 5 < ttl["tm:history:facts:TM-20003"] <= FACT_TTL
    assert FACT_TTL + 86400 - 5 < ttl[f"tm:history:day:{DAY.isoformat()}"] <= FACT_TTL + 86400
    assert FACT_TTL - 5 < ttl["tm:history:trace:trace-TM-20003"] <= FACT_TTL
    assert await store.ticket_of_trace("trace-TM-20003") == "TM-20003"


async def test_a_replay_older_than_the_records_live_is_left_out(client):
    store = _store(client)
    entry = _entries()[0]
    received = datetime.fromtimestamp(entry.occurred_at, timezone.utc)
    assert not store.too_old(entry, received + timedelta(days=29))
    assert store.too_old(entry, received + timedelta(days=31))


async def test_the_backlog_forgets_tickets_whose_facts_expired(client):
    store = _store(client)
    for entry in _entries():
        await store.record(entry)
    assert sorted(f["ticket_id"] for f in await store.open_tickets(NOW)) == ["TM-20004", "TM-20005"]
    await client.delete("tm:history:facts:TM-20004")   # as its TTL would
    assert [f["ticket_id"] for f in await store.open_tickets(NOW)] == ["TM-20005"]
    assert await client.zrange("tm:history:open", 0, -1) == ["TM-20005"]
    later = NOW + timedelta(seconds=FACT_TTL)
    assert await store.open_tickets(later) == [] and await client.zcard("tm:history:open") == 0
    start = datetime(2026, 3, 2, 10, tzinfo=timezone.utc)
    assert sorted(f["ticket_id"] for f in await store.received_between(start, start + timedelta(hours=2))) == [
        "TM-20002", "TM-20003"]   # received 10:00 and 11:00; 12:00 is the end, excluded
