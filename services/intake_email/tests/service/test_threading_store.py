"""intake_email's threading keys on a real Redis: one lookup, participants, resolution that only moves forward."""
from datetime import datetime, timedelta, timezone

from services.intake_email import intake
from services.intake_email.store import IntakeEmailStore
from services.intake_email.thread_match import MAX_CHAIN

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)
MSGID = intake.KIND_MESSAGE_ID


def keys(*message_ids):
    return [intake.message_id_key(m) for m in message_ids]


def test_one_lookup_finds_the_nearest_stored_id_and_what_we_know_of_the_tickets(redis_client):
    store = IntakeEmailStore(redis_client)
    opened, _ = store.claim_ticket(MSGID, intake.message_id_key("first@x"))
    store.claim_reply(MSGID, intake.message_id_key("second@x"), opened)
    store.add_participants(opened, ["Zhang.Wei@example.com", "li.si@example.com"])
    chain = [f"unknown-{i}@x" for i in range(MAX_CHAIN - 2)] + ["second@x", "first@x"]

    found = store.thread_lookups(MSGID, keys(*chain), sender="ZHANG.WEI@example.com", tickets=["TM-1"])
    assert (found.chain_ticket, found.chain_index) == (opened, MAX_CHAIN - 2)  # the reply, nearer than the opener
    assert found.participant_of == {opened} and found.known_tickets == {opened}
    assert found.resolved == {}

    stranger = store.thread_lookups(MSGID, [], sender="mallory@evil.test", tickets=[opened])
    assert stranger.chain_ticket is None
    assert stranger.participant_of == frozenset() and stranger.known_tickets == {opened}


def test_resolution_only_moves_forward_and_a_follow_up_clears_it(redis_client):
    store = IntakeEmailStore(redis_client)

    def resolved():
        return store.thread_lookups(MSGID, [], sender="", tickets=["TM-7"]).resolved.get("TM-7")

    store.mark_resolved("TM-7", T0)
    store.mark_resolved("TM-7", T0 - timedelta(days=1))  # an older resolution arriving late
    assert resolved() == T0
    store.mark_followed_up("TM-7", T0 + timedelta(minutes=5))
    assert resolved() is None
    store.mark_resolved("TM-7", T0)  # the same ticket_resolved redelivered: stays reopened
    assert resolved() is None
    store.mark_resolved("TM-7", T0 + timedelta(hours=1))  # resolved again later
    assert resolved() == T0 + timedelta(hours=1)
    assert redis_client.ttl("tm:intake_email:ticket:TM-7") > 0


def test_a_claimed_ticket_is_prepared_as_planned_however_often_and_the_first_link_wins(redis_client):
    store = IntakeEmailStore(redis_client)
    key = intake.message_id_key("late-reply@x")
    store.plan_link(MSGID, key, "TM-3")
    ticket, _ = store.claim_ticket(MSGID, key)
    # A crash here leaves the claim and the plan: the republish prepares the ticket all the same.
    assert store.prepare_ticket(MSGID, key, ticket, ["Cheng.Li@example.com"]) == "TM-3"
    assert store.prepare_ticket(MSGID, key, ticket, ["cheng.li@example.com", "li.si@example.com"]) == "TM-3"
    store.plan_link(MSGID, key, "TM-4")
    assert store.prepare_ticket(MSGID, key, ticket, []) == "TM-3"
    assert store.linked_ticket(ticket) == "TM-3"
    assert redis_client.smembers(f"tm:intake_email:participants:{ticket}") == {"cheng.li@example.com",
                                                                              "li.si@example.com"}
    assert store.thread_lookups(MSGID, [], sender="", tickets=[ticket, "TM-404"]).known_tickets == {ticket}

    unlinked = intake.message_id_key("fresh@x")
    store.plan_link(MSGID, unlinked, None)
    fresh, _ = store.claim_ticket(MSGID, unlinked)
    assert store.prepare_ticket(MSGID, unlinked, fresh, []) is None
    assert store.linked_ticket(fresh) is None
