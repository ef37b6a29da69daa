"""What routing a received ticket costs in Redis round trips, on a real Redis (each round trip
on loopback costs the dispatcher about as much CPU as the rest of the ticket's Python)."""
from datetime import datetime, timezone

import pytest

from services.dispatcher.assigner import Assigner
from services.dispatcher.policy import RoutingPolicy
from services.dispatcher.store import DispatchStore, TicketFacts
from services.dispatcher.tests.service.test_dispatcher_service import PASSWORD_HASH
from shared import events as ev
from shared.customer_identity import ContactIdentifiers, Identifier
from shared.roster import AgentProfile

T0 = 1_900_000_000.0
NOW = datetime.fromtimestamp(T0, timezone.utc)



def route(store, ticket_id, visitor, events):
    """What the service's handler does with a received chat (its classification aside)."""
    contact = ContactIdentifiers(verified=(Identifier("chat_visitor", visitor),))
    received = store.receive(contact, f"chat:{visitor}", ticket_id, now=T0, name="Ann")
    try:
        facts = TicketFacts(ticket_id=ticket_id, trace_id=f"trace-{ticket_id}", channel="chat", priority="P3",
                            required_skills=("billing",), language="zh", tags=(), received_at=NOW,
                            customer_id=received.resolution.profile_id)

        def emit(event_type, /, *, now, trace_id, **fields):
            events.append((event_type, fields["ticket_id"]))
            return ev.make_event(ev.DISPATCHER, event_type, now=now, trace_id=trace_id, **fields)

        assigner = Assigner(store, emit, lambda: NOW, store.policy)
        return assigner.receive(facts, received=received), received
    finally:
        store.release(received)


def test_a_new_customers_ticket_is_routed_in_three_round_trips(redis_client, round_trips):
    store = DispatchStore(redis_client, RoutingPolicy(offer_timeout_seconds=0))
    store.load_roster([AgentProfile(agent_id="li.na", name="li.na", password_hash=PASSWORD_HASH,
                                    skills={"billing": 3}, languages=["zh"], capacity={"chat": 5})])
    store.set_presence("li.na", "online", T0 - 1)
    events = []
    route(store, "TM-0", "v-0", events)  # the connections and scripts are loaded, the roster cached
    round_trips.clear()
    outcome, received = route(store, "TM-1", "v-1", events)
    # customer + lease + agents; register + claim; customer history + announcements + release
    assert (outcome, len(round_trips)) == ("assigned", 3)
    assert received.resolution.created and received.handed_over
    assert events[-2:] == [(ev.TICKET_CLASSIFIED, "TM-1"), (ev.TICKET_ASSIGNED, "TM-1")]
    record = store.ticket("TM-1")
    assert (record.state, record.agent_id, record.announced) == ("assigned", "li.na", {"classified", "assigned"})
    assert [d["winner"] for d in store.decisions("TM-1")] == ["li.na"]
    assert [t.ticket_id for t in store.customers.history(received.resolution.profile_id, now=T0).open] == ["TM-1"]
    assert redis_client.get("tm:dispatcher:routing:TM-1") is None  # released
    assert redis_client.zscore(store.unannounced_key, "TM-1") is None

    # a redelivery registers nothing twice and announces nothing again
    again, _ = route(store, "TM-1", "v-1", events)
    assert again == "already_assigned" and events[-1] == (ev.TICKET_ASSIGNED, "TM-1") and len(events) == 4


def test_a_ticket_ranked_from_the_index_registers_with_its_page(redis_client, round_trips):
    store = DispatchStore(redis_client, RoutingPolicy(offer_timeout_seconds=0))
    store.full_scan_agents = 0  # every roster is large: ranked a page at a time from the availability index
    store.load_roster([AgentProfile(agent_id="li.na", name="li.na", password_hash=PASSWORD_HASH,
                                    skills={"billing": 3}, languages=["zh"], capacity={"chat": 5})])
    store.set_presence("li.na", "online", T0 - 1)
    events = []
    route(store, "TM-0", "v-0", events)
    assert store.uses_index()
    round_trips.clear()
    outcome, received = route(store, "TM-1", "v-1", events)
    # customer + lease; register + the index's first page; claim; release
    assert (outcome, len(round_trips), received.snapshot_reads) == ("assigned", 4, None)
    record = store.ticket("TM-1")
    assert (record.state, record.agent_id, record.announced) == ("assigned", "li.na", {"classified", "assigned"})
    assert record.facts.customer_id == received.resolution.profile_id
    assert "ranked agents 1-1 of the 1 online" in store.decisions("TM-1")[-1]["reason"]


def test_a_failed_announcement_still_registers_the_facts_and_releases_the_lease(redis_client):
    store = DispatchStore(redis_client, RoutingPolicy(offer_timeout_seconds=0))
    store.load_roster([AgentProfile(agent_id="li.na", name="li.na", password_hash=PASSWORD_HASH,
                                    skills={"billing": 3}, languages=["zh"], capacity={"chat": 5})])
    contact = ContactIdentifiers(verified=(Identifier("chat_visitor", "v-1"),))
    received = store.receive(contact, "chat:v-1", "TM-1", now=T0, name=None)
    facts = TicketFacts(ticket_id="TM-1", trace_id="trace-TM-1", channel="chat", priority="P3",
                        required_skills=("billing",), language="zh", tags=(), received_at=NOW,
                        customer_id=received.resolution.profile_id)

    def emit(event_type, /, **fields):
        raise ConnectionError("broker away")

    with pytest.raises(ConnectionError):
        Assigner(store, emit, lambda: NOW, store.policy).receive(facts, received=received)
    store.release(received)
    record = store.ticket("TM-1")  # registered once, as the first delivery classified it: a redelivery keeps it
    assert (record.state, record.facts, record.announced) == ("new", facts, frozenset())
    assert redis_client.get("tm:dispatcher:routing:TM-1") is None
    assert 0 < redis_client.ttl(store.ticket_key("TM-1")) <= 30 * 24 * 3600
