"""One customer across channels, in the dispatcher's nameko container on a real RabbitMQ and Redis:
profiles from verified identifiers, directory tier and language, cross-channel attach and link."""
from datetime import timedelta

import pytest
from nameko.testing.services import entrypoint_waiter

from services.dispatcher.tests.service.test_dispatcher_service import (
    NOW,
    collect,
    go_online,
    handled_ok,
    of,
    plain_rules,
    start_dispatcher,
    write_roster,
)
from shared import events as ev
from shared.customer_identity import ContactIdentifiers, Identifier
from shared.customer_store import CustomerStore
from shared.testing.plugin import poll_until

EMAIL = Identifier("email", "zhang.wei@example.com")
PHONE = Identifier("phone", "+8613812345678")
ZHANG_MAIL = {"name": "张伟", "email": "Zhang.Wei@example.com", "verified": ["email"]}
ZHANG_CALL = {"name": "", "phone": "+8613812345678", "verified": ["phone"]}
OTHER_MAIL = {"name": "Li", "email": "someone.else@example.com", "verified": ["email"]}


def ticket(ticket_id, channel, customer, *, received_at=NOW, subject="订单 12345 还没有收到", text="请帮忙查一下订单。"):
    source = {"email": ev.INTAKE_EMAIL, "chat": ev.INTAKE_CHAT, "phone": ev.INTAKE_PHONE}[channel]
    body = ev.make_event(source, ev.TICKET_RECEIVED, now=received_at, trace_id=f"trace-{ticket_id}",
                         event_id=f"rx-{ticket_id}", ticket_id=ticket_id, channel=channel, customer=customer,
                         subject=subject, text=text, received_at=received_at,
                         source={"call_id": f"call-{ticket_id}"} if channel == "phone" else {})
    return source, ev.TICKET_RECEIVED, body


def identity_rules(mode="attach", hours=24):
    # No offers: the tests move the clock by hours, which would let every offer run out meanwhile.
    return plain_rules({"offer_timeout_seconds": 0,
                        "identity": {"attach_within_hours": hours, "mode": mode, "by_channel": {}}})


@pytest.fixture
def directory(redis_client):
    """The company's records: Zhang Wei's mail address and phone number are one customer."""
    def add(*identifiers, **attributes):
        return CustomerStore(redis_client).resolve(ContactIdentifiers(verified=identifiers), now=NOW.timestamp(),
                                                   attributes=attributes, directory=True).profile_id
    return add


@pytest.fixture
def clock(monkeypatch):
    """The dispatcher's clock, moved by the test."""
    now = [NOW]
    monkeypatch.setattr("services.dispatcher.service.utcnow", lambda: now[0])
    return now


def open_in_history(store, customer_id, ticket_id):
    """The customer's history notes a routed ticket when its routing lease is released, a moment
    after the ticket's events: a contact arriving in between would not see it open yet."""
    poll_until(lambda: ticket_id in {t.ticket_id for t in store.customers.history(customer_id, now=NOW.timestamp()).open},
               what=f"{ticket_id} open in the customer's history")


def agents(tmp_path):
    return write_roster(tmp_path, [
        {"agent_id": "li.na", "capacity": {"email": 4, "chat": 2, "phone": 2}},
        {"agent_id": "chen.wei", "capacity": {"email": 4, "chat": 2, "phone": 2}},
    ])


def test_a_call_from_the_customer_of_an_open_mail_ticket_joins_it_instead_of_a_second_agent(
        service_container, tmp_path, publish, store, event_listener, directory, clock):
    customer_id = directory(EMAIL, PHONE)
    container = start_dispatcher(service_container, agents(tmp_path), identity_rules("attach"))
    listener = event_listener(ev.DISPATCHER)
    go_online(publish, store, "li.na", "chen.wei")

    publish(*ticket("TM-1", "email", ZHANG_MAIL))
    events = collect(listener, lambda seen: of(seen, ev.TICKET_ASSIGNED, "TM-1"))
    [classified] = of(events, ev.TICKET_CLASSIFIED, "TM-1")
    assert classified["customer_id"] == customer_id
    holder = of(events, ev.TICKET_ASSIGNED, "TM-1")[0]["agent_id"]
    open_in_history(store, customer_id, "TM-1")

    clock[0] = NOW + timedelta(minutes=30)
    call = ticket("TM-2", "phone", ZHANG_CALL, received_at=clock[0], subject="未接来电", text="Missed call. Please call back.")
    publish(*call)
    events = collect(listener, lambda seen: of(seen, ev.TICKET_ATTACHED))
    [attached] = of(events, ev.TICKET_ATTACHED)
    assert attached["ticket_id"] == "TM-2" and attached["into_ticket_id"] == "TM-1"
    assert attached["mode"] == "attach" and attached["channel"] == "phone" and attached["customer_id"] == customer_id
    assert attached["text"] == "Missed call. Please call back." and attached["trace_id"] == "trace-TM-2"

    # A redelivery repeats the decision (same event id), and a later ticket is a marker: nothing
    # about TM-2 was classified, queued or assigned in between.
    with entrypoint_waiter(container, "handle_phone_ticket_received", timeout=10, callback=handled_ok("TM-2", 1)):
        publish(*call)
    publish(*ticket("TM-3", "email", OTHER_MAIL, received_at=clock[0]))
    events = collect(listener, lambda seen: of(seen, ev.TICKET_ASSIGNED, "TM-3"))
    assert [b["event_id"] for b in of(events, ev.TICKET_ATTACHED)] == [attached["event_id"]]
    for kind in (ev.TICKET_CLASSIFIED, ev.TICKET_QUEUED, ev.TICKET_ASSIGNED):
        assert of(events, kind, "TM-2") == []
    assert store.ticket("TM-2") is None
    assert store.load_of(holder, "phone") == 0 and store.open_tickets(holder) >= {"TM-1"}
    history = store.customers.history(customer_id, now=clock[0].timestamp())
    assert [(t.ticket_id, t.last_activity) for t in history.open] == [("TM-1", clock[0].timestamp())]


def test_mode_link_routes_the_contact_as_its_own_ticket_to_the_same_agent(
        service_container, tmp_path, publish, store, event_listener, directory, clock):
    customer_id = directory(EMAIL, PHONE)
    start_dispatcher(service_container, agents(tmp_path), identity_rules("link"))
    listener = event_listener(ev.DISPATCHER)
    go_online(publish, store, "li.na", "chen.wei")

    publish(*ticket("TM-1", "email", ZHANG_MAIL))
    holder = of(collect(listener, lambda seen: of(seen, ev.TICKET_ASSIGNED, "TM-1")), ev.TICKET_ASSIGNED)[0]["agent_id"]
    other = {"li.na": "chen.wei", "chen.wei": "li.na"}[holder]
    publish(*ticket("TM-9", "email", OTHER_MAIL))  # the holder now has less room than the other agent
    assert of(collect(listener, lambda seen: of(seen, ev.TICKET_ASSIGNED, "TM-9")), ev.TICKET_ASSIGNED)[0][
        "agent_id"] == other

    open_in_history(store, customer_id, "TM-1")
    clock[0] = NOW + timedelta(hours=1)
    publish(*ticket("TM-2", "phone", ZHANG_CALL, received_at=clock[0], text="Missed call."))
    events = collect(listener, lambda seen: of(seen, ev.TICKET_ASSIGNED, "TM-2"))
    [linked] = of(events, ev.TICKET_ATTACHED)
    assert (linked["ticket_id"], linked["into_ticket_id"], linked["mode"]) == ("TM-2", "TM-1", "link")
    [classified] = of(events, ev.TICKET_CLASSIFIED, "TM-2")
    assert classified["customer_id"] == customer_id
    assert classified["history"]["open_tickets"] == ["TM-1"] and classified["history"]["last_agent_id"] == holder
    [assigned] = of(events, ev.TICKET_ASSIGNED, "TM-2")
    assert assigned["agent_id"] == holder and assigned["decision"]["step"] == "sticky"


def test_the_window_counts_from_the_last_contact_and_a_late_call_is_a_ticket_of_its_own(
        service_container, tmp_path, publish, store, event_listener, directory, clock):
    customer_id = directory(EMAIL, PHONE)
    start_dispatcher(service_container, agents(tmp_path), identity_rules("attach", hours=2))
    listener = event_listener(ev.DISPATCHER)
    go_online(publish, store, "li.na", "chen.wei")

    publish(*ticket("TM-1", "email", ZHANG_MAIL))
    collect(listener, lambda seen: of(seen, ev.TICKET_ASSIGNED, "TM-1"))
    open_in_history(store, customer_id, "TM-1")
    clock[0] = NOW + timedelta(hours=1, minutes=30)  # inside 2 h of the mail
    publish(*ticket("TM-2", "phone", ZHANG_CALL, received_at=clock[0]))
    assert of(collect(listener, lambda seen: of(seen, ev.TICKET_ATTACHED)), ev.TICKET_ATTACHED)[0][
        "into_ticket_id"] == "TM-1"
    clock[0] = NOW + timedelta(hours=3, minutes=15)  # 3 h after the mail, but 1 h 45 after the call
    publish(*ticket("TM-3", "phone", ZHANG_CALL, received_at=clock[0]))
    assert of(collect(listener, lambda seen: of(seen, ev.TICKET_ATTACHED, "TM-3")), ev.TICKET_ATTACHED)[0][
        "into_ticket_id"] == "TM-1"
    clock[0] = NOW + timedelta(hours=5, minutes=30)  # 2 h 15 after the last contact: too late
    publish(*ticket("TM-4", "phone", ZHANG_CALL, received_at=clock[0]))
    events = collect(listener, lambda seen: of(seen, ev.TICKET_ASSIGNED, "TM-4"))
    assert of(events, ev.TICKET_ATTACHED, "TM-4") == []
    assert of(events, ev.TICKET_CLASSIFIED, "TM-4")[0]["history"]["open_tickets"] == ["TM-1"]


def test_a_resolved_ticket_is_not_joined_and_unverified_numbers_never_attach(
        service_container, tmp_path, publish, store, event_listener, directory, clock):
    directory(EMAIL, PHONE)
    start_dispatcher(service_container, agents(tmp_path), identity_rules("attach"))
    listener = event_listener(ev.DISPATCHER)
    go_online(publish, store, "li.na", "chen.wei")

    publish(*ticket("TM-1", "email", ZHANG_MAIL))
    events = collect(listener, lambda seen: of(seen, ev.TICKET_ASSIGNED, "TM-1"))
    holder = of(events, ev.TICKET_ASSIGNED)[0]["agent_id"]
    zhang = of(events, ev.TICKET_CLASSIFIED, "TM-1")[0]["customer_id"]
    open_in_history(store, zhang, "TM-1")
    # A chat whose visitor typed Zhang Wei's number: it proves nothing, so it joins nothing.
    typed = {"name": "张伟", "phone": "138 1234 5678", "chat_visitor_id": "v-77", "verified": ["chat_visitor"]}
    publish(*ticket("TM-2", "chat", typed, text="在吗"))
    events = collect(listener, lambda seen: of(seen, ev.TICKET_CLASSIFIED, "TM-2"))
    assert of(events, ev.TICKET_ATTACHED) == []
    visitor = of(events, ev.TICKET_CLASSIFIED, "TM-2")[0]["customer_id"]
    assert visitor not in (None, zhang)
    assert [m["other"] for m in store.customers.profile(visitor).maybe] == [zhang]  # for a person to confirm

    publish(ev.AGENT_DESK, ev.TICKET_RESOLVED, ev.make_event(
        ev.AGENT_DESK, ev.TICKET_RESOLVED, now=NOW, trace_id="trace-TM-1", ticket_id="TM-1", agent_id=holder,
        channel="email"))
    publish(*ticket("TM-3", "phone", ZHANG_CALL))
    events = collect(listener, lambda seen: of(seen, ev.TICKET_CLASSIFIED, "TM-3"))
    assert of(events, ev.TICKET_ATTACHED) == []


def test_the_directory_tier_and_language_win_and_the_history_travels_with_the_ticket(
        service_container, tmp_path, publish, store, event_listener, directory, clock):
    customer_id = directory(EMAIL, tier="vip", language="en")
    start_dispatcher(service_container, agents(tmp_path), identity_rules())
    listener = event_listener(ev.DISPATCHER)
    go_online(publish, store, "li.na")

    publish(*ticket("TM-1", "email", {**ZHANG_MAIL, "tier": None, "language": "zh"}))
    events = collect(listener, lambda seen: of(seen, ev.TICKET_ASSIGNED, "TM-1"))
    [classified] = of(events, ev.TICKET_CLASSIFIED, "TM-1")
    assert classified["customer_tier"] == "vip" and classified["language"] == "en"
    assert classified["customer_id"] == customer_id
    assert classified["history"] == {"open_tickets": [], "recent_tickets": 0, "recent_complaints": 0,
                                     "last_agent_id": None}
    assert store.ticket("TM-1").facts.customer_tier == "vip"

    open_in_history(store, customer_id, "TM-1")
    clock[0] = NOW + timedelta(minutes=5)
    publish(*ticket("TM-2", "email", ZHANG_MAIL, received_at=clock[0], subject="还是没有收到"))
    events = collect(listener, lambda seen: of(seen, ev.TICKET_CLASSIFIED, "TM-2"))
    [second] = of(events, ev.TICKET_CLASSIFIED, "TM-2")
    assert second["history"] == {"open_tickets": ["TM-1"], "recent_tickets": 1, "recent_complaints": 0,
                                 "last_agent_id": "li.na"}
    assert second["customer_tier"] == "vip"
