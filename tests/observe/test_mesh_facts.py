"""The Redis reads behind ``ticketmesh status`` and the scrape-time gauges, on real Redis."""
import json

from shared import mesh_facts, metrics
from shared.redis_store import async_client
from prometheus_client import REGISTRY


def put_view(redis_client, ticket_id, status, received=100.0):
    redis_client.zadd(mesh_facts.OPEN_KEY, {ticket_id: received})
    redis_client.set(f"tm:agent_desk:ticket:{ticket_id}", json.dumps({"ticket_id": ticket_id, "status": status}))


def test_open_tickets_by_status_reads_every_view_in_chunks_with_progress(redis_client, monkeypatch):
    monkeypatch.setattr(mesh_facts, "VIEW_CHUNK", 2)
    for n, status in enumerate(["queued", "queued", "accepted", "assigned", "reopened"]):
        put_view(redis_client, f"TM-{n}", status)
    redis_client.zadd(mesh_facts.OPEN_KEY, {"TM-gone": 1.0})  # its view expired
    seen = []
    counts = mesh_facts.open_tickets_by_status(redis_client, lambda done, total: seen.append((done, total)))
    assert counts == {"queued": 2, "accepted": 1, "assigned": 1, "reopened": 1, "unknown": 1}
    assert seen == [(2, 6), (4, 6), (6, 6)]


def test_sla_summary_splits_due_now_from_due_soon(redis_client):
    now = 10_000.0
    redis_client.zadd(mesh_facts.SLA_DUE_KEY, {"a:fr:warning": now - 5, "b:fr:breach": now + 60,
                                               "c:fr:breach": now + 3600})
    redis_client.zadd(mesh_facts.SLA_RISK_KEY, {"TM-1": now})
    assert mesh_facts.sla_summary(redis_client, now) == {"at_risk": 1, "due_now": 1, "due_next_15m": 1}


def test_agents_by_presence(redis_client):
    redis_client.hset(mesh_facts.PRESENCE_KEY, mapping={"a": "online", "b": "offline", "c": "online"})
    assert mesh_facts.agents_by_presence(redis_client) == {"online": 2, "offline": 1}


async def test_ticket_gauges_feed_the_tickets_metric(redis_client, redis_url):
    put_view(redis_client, "TM-1", "queued")
    put_view(redis_client, "TM-2", "accepted")
    redis_client.zadd(mesh_facts.QUEUED_KEY, {"TM-1": 1.0})
    client = async_client(redis_url)
    try:
        gauges = await mesh_facts.ticket_gauges(client)
    finally:
        await client.aclose()
    assert gauges == {"open": 2, "queued": 1, "sla_at_risk": 0}
    metrics.configure("agent_desk", "facts-1")
    metrics.set_tickets(gauges)
    labels = {"service": "agent_desk", "replica": "facts-1"}
    assert REGISTRY.get_sample_value("ticketmesh_tickets", {**labels, "status": "queued"}) == 1
    assert REGISTRY.get_sample_value("ticketmesh_tickets", {**labels, "status": "open"}) == 2
    metrics.configure("unknown", "")
