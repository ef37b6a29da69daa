"""Customer profiles on a real Redis: resolve, merge, aliases, maybe-links, races, history."""
import threading

import pytest

from shared.customer_identity import ContactIdentifiers, Identifier, MergeRefused
from shared.customer_store import ATTACHED, OWN, ContactOutcome, CustomerStore, Keys, ProfileHistory, UnknownProfile
from shared.redis_store import execute_with_scripts

EMAIL = Identifier("email", "zhang.wei@example.com")
PHONE = Identifier("phone", "+8613812345678")
VISITOR = Identifier("chat_visitor", "v-1")
USER_1 = Identifier("external_user", "u-1")
USER_2 = Identifier("external_user", "u-2")
T0 = 1_800_000_000.0


def contact(*verified, typed=()):
    return ContactIdentifiers(verified=tuple(verified), typed=tuple(typed))


@pytest.fixture
def customers(redis_client):
    return CustomerStore(redis_client)


def test_a_verified_identifier_finds_its_profile_again(customers):
    first = customers.resolve(contact(EMAIL), now=T0, name="张伟")
    assert first.created and first.profile_id == "CU-1" and first.changed
    again = customers.resolve(contact(EMAIL), now=T0 + 1, name="Zhang Wei")
    assert again.profile_id == "CU-1" and not again.created and not again.changed
    profile = customers.profile("CU-1")
    assert profile.identifiers == (EMAIL,) and profile.name == "张伟"  # the first name seen stays
    assert customers.owner(EMAIL) == "CU-1"
    assert customers.resolve(contact(typed=[EMAIL]), now=T0).profile_id is None  # typed only: nobody


def test_one_contact_with_two_verified_identifiers_merges_their_profiles_and_the_alias_still_resolves(customers):
    by_mail = customers.resolve(contact(EMAIL), now=T0).profile_id
    by_phone = customers.resolve(contact(PHONE), now=T0 + 1).profile_id
    customers.record_ticket(by_phone, "TM-2", channel="phone", received=T0 + 1)
    both = customers.resolve(contact(EMAIL, PHONE), now=T0 + 2)
    assert (by_mail, by_phone) == ("CU-1", "CU-2")
    assert both.profile_id == "CU-1" and both.merged == ("CU-2",)
    assert customers.owner(PHONE) == "CU-1"
    assert customers.root("CU-2") == "CU-1"
    survivor = customers.profile("CU-2")  # an alias answers with its survivor
    assert survivor.profile_id == "CU-1" and survivor.aliases == ("CU-2",)
    assert set(survivor.identifiers) == {EMAIL, PHONE}
    history = customers.history("CU-1", now=T0 + 3)
    assert [t.ticket_id for t in history.open] == ["TM-2"] and history.recent_tickets == 1


def test_a_merge_of_merges_points_every_alias_at_the_survivor(customers):
    a = customers.resolve(contact(EMAIL), now=T0).profile_id
    b = customers.resolve(contact(PHONE), now=T0).profile_id
    c = customers.resolve(contact(VISITOR), now=T0).profile_id
    customers.resolve(contact(PHONE, VISITOR), now=T0)  # b absorbs c
    customers.resolve(contact(EMAIL, VISITOR), now=T0)  # a absorbs b (with c)
    assert (a, b, c) == ("CU-1", "CU-2", "CU-3")
    for pid in (a, b, c):
        assert customers.root(pid) == "CU-1"
    assert customers.client.hget(Keys.profile("CU-3"), "merged_into") == "CU-1"  # one hop, not a chain
    assert customers.profile("CU-1").aliases == ("CU-2", "CU-3")


def test_typed_identifiers_only_link_as_maybe_in_both_directions(customers):
    owner = customers.resolve(contact(EMAIL), now=T0).profile_id
    visitor = customers.resolve(contact(VISITOR, typed=[EMAIL, PHONE]), now=T0)
    assert visitor.profile_id == "CU-2" and [(m.other, m.reason) for m in visitor.maybe] == [
        ("CU-1", "typed_matches_verified")]
    assert customers.owner(EMAIL) == owner  # never taken over by a typed claim
    caller = customers.resolve(contact(PHONE), now=T0)  # someone proves the number CU-2 only typed
    assert caller.profile_id == "CU-3" and [(m.other, m.reason) for m in caller.maybe] == [
        ("CU-2", "verified_matches_typed")]
    assert {m["other"] for m in customers.profile("CU-2").maybe} == {"CU-1", "CU-3"}
    assert customers.carriers(PHONE) == ["CU-2"]


def test_a_person_confirms_or_dismisses_a_maybe(customers):
    customers.resolve(contact(EMAIL), now=T0)
    customers.resolve(contact(VISITOR, typed=[EMAIL]), now=T0)
    customers.resolve(contact(PHONE, typed=[EMAIL]), now=T0)
    assert customers.dismiss("CU-3", "CU-1", now=T0, by="wang.fang")
    assert not customers.dismiss("CU-3", "CU-1", now=T0, by="wang.fang")  # gone already
    again = customers.resolve(contact(PHONE, typed=[EMAIL]), now=T0 + 1)
    assert again.maybe == () and not again.changed  # a dismissed link never comes back
    survivor, absorbed = customers.merge("CU-2", "CU-1", now=T0, by="wang.fang")
    assert (survivor, absorbed) == ("CU-1", "CU-2")
    merged = customers.profile("CU-1")
    assert set(merged.identifiers) == {EMAIL, VISITOR} and merged.maybe == ()
    assert merged.dismissed == ("CU-3",)  # CU-1 had said CU-3 is someone else: it still does
    with pytest.raises(UnknownProfile):
        customers.merge("CU-1", "CU-99", now=T0, by="wang.fang")


def test_two_company_users_never_merge(customers):
    customers.resolve(contact(VISITOR, USER_1), now=T0)
    second = customers.resolve(contact(VISITOR, USER_2), now=T0)  # the same browser, another login
    assert second.profile_id == "CU-2" and second.merged == ()
    assert [(m.other, m.reason) for m in second.maybe] == [("CU-1", "different_company_users")]
    assert customers.owner(VISITOR) == "CU-1"
    with pytest.raises(MergeRefused):
        customers.merge("CU-1", "CU-2", now=T0, by="wang.fang")


def test_directory_attributes_are_set_once_and_a_repeat_changes_nothing(customers):
    customers.resolve(contact(EMAIL), now=T0, name="张伟")
    row = contact(EMAIL, PHONE)
    imported = customers.resolve(row, now=T0 + 1, attributes={"tier": "vip", "language": "zh"}, directory=True)
    assert imported.changed and imported.tier == "vip" and imported.profile_id == "CU-1"
    again = customers.resolve(row, now=T0 + 2, attributes={"tier": "vip", "language": "zh"}, directory=True)
    assert not again.changed and again.tier == "vip"
    assert customers.profile("CU-1").directory_at == T0 + 1
    dry = customers.resolve(contact(USER_1), now=T0, attributes={"tier": "gold"}, directory=True, dry_run=True)
    assert dry.created and dry.profile_id is None and customers.owner(USER_1) is None
    updated = customers.update_attributes("CU-1", {"tier": None, "name": "Zhang Wei"}, now=T0 + 3)
    assert (updated.tier, updated.name, updated.language) == (None, "Zhang Wei", "zh")


def test_two_resolvers_at_once_never_make_two_profiles_for_one_identifier(redis_client):
    first, second = CustomerStore(redis_client), CustomerStore(redis_client)
    assert first.resolve(contact(PHONE), now=T0).profile_id == "CU-1"
    ran = []

    def between_read_and_write():
        if not ran:  # exactly once: another replica meets the same customer's mail address right here
            ran.append(second.resolve(contact(EMAIL), now=T0))

    first.after_read = between_read_and_write
    result = first.resolve(contact(EMAIL, PHONE), now=T0)  # read: CU-1 gets the new address
    assert ran[0].profile_id == "CU-2" and ran[0].created
    # The write found the address taken since its read: it read again, and the rules merged.
    assert result.profile_id == "CU-1" and result.merged == ("CU-2",)
    assert first.owner(EMAIL) == "CU-1" and first.root("CU-2") == "CU-1"
    assert set(first.profile("CU-1").identifiers) == {EMAIL, PHONE}


def test_a_new_customer_is_created_once_and_a_taken_identifier_sends_it_to_the_rules(redis_client):
    customers = CustomerStore(redis_client)
    created = customers.resolve(contact(VISITOR, USER_1, typed=[EMAIL]), now=T0, name="Ann")
    assert created.created and created.profile_id == "CU-1"
    profile = customers.profile("CU-1")
    assert (profile.name, profile.external_user, profile.typed) == ("Ann", "u-1", (EMAIL,))
    assert customers.carriers(EMAIL) == ["CU-1"]
    # The mail address someone typed is now proved by its owner: a new profile, linked as maybe.
    proved = customers.resolve(contact(EMAIL), now=T0)
    assert proved.created and [m.other for m in proved.maybe] == ["CU-1"]


def test_many_concurrent_resolvers_agree(redis_client):
    stores = [CustomerStore(redis_client) for _ in range(8)]
    identifiers = [Identifier("phone", f"+861381234{n:04d}") for n in range(8)]
    results = [None] * 8
    start = threading.Barrier(8)

    def work(n):
        start.wait()
        # each replica sees a ticket naming its own number and its neighbour's: all eight are one customer
        results[n] = stores[n].resolve(contact(identifiers[n], identifiers[(n + 1) % 8]), now=T0)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    roots = {stores[0].root(r.profile_id) for r in results}
    assert len(roots) == 1
    [root] = roots
    assert {stores[0].owner(i) for i in identifiers} == {root}
    assert set(stores[0].profile(root).identifiers) == set(identifiers)


def test_contact_decisions_are_made_once(customers):
    first = customers.decide_contact("TM-5", ContactOutcome(ATTACHED, "CU-1", "TM-1", T0))
    assert first.outcome == ATTACHED
    second = customers.decide_contact("TM-5", ContactOutcome(OWN, "CU-1", None, T0 + 1))
    assert (second.outcome, second.into_ticket_id) == (ATTACHED, "TM-1")
    assert customers.contact("TM-6") is None


def test_history_open_tickets_close_and_touch(customers):
    pid = customers.resolve(contact(EMAIL), now=T0).profile_id
    pipe = customers.client.pipeline()
    customers.queue_ticket(pipe, pid, "TM-1", channel="email", received=T0, complaint=True)
    customers.queue_ticket(pipe, pid, "TM-2", channel="chat", received=T0 + 10, complaint=False)
    customers.queue_agent(pipe, pid, "li.na", at=T0 + 5)
    pipe.execute()
    customers.touch_ticket(pid, "TM-1", at=T0 + 20)
    history = customers.history(pid, now=T0 + 30, exclude="TM-3")
    assert [(t.ticket_id, t.channel, t.last_activity) for t in history.open] == [
        ("TM-1", "email", T0 + 20), ("TM-2", "chat", T0 + 10)]
    assert (history.recent_tickets, history.recent_complaints, history.last_agent_id) == (2, 1, "li.na")
    customers.ticket_closed(pid, "TM-1")
    assert [t.ticket_id for t in customers.history(pid, now=T0 + 30).open] == ["TM-2"]
    customers.touch_ticket(pid, "TM-1", at=T0 + 40)  # closed: touching does not reopen it
    assert [t.ticket_id for t in customers.history(pid, now=T0 + 30).open] == ["TM-2"]


def test_a_new_contact_is_created_with_its_context_in_one_round_trip(customers, round_trips):
    customers.resolve_contact(contact(USER_2), "TM-0", now=T0)  # CU-1; the connection and the script loaded
    round_trips.clear()
    found = customers.resolve_contact(contact(VISITOR, typed=[EMAIL]), "TM-1", now=T0, name="Ann",
                                      queue_reads=lambda pipe: pipe.get("tm:test:extra"))
    assert len(round_trips) == 1
    assert (found.resolution.profile_id, found.resolution.created, found.resolution.changed) == ("CU-2", True, True)
    assert found.resolution.attributes == {"name": "Ann"}
    assert (found.history, found.decided, found.reads) == (ProfileHistory(), None, [None])
    profile = customers.profile("CU-2")  # as resolve creates it
    assert (profile.name, profile.identifiers, profile.typed) == ("Ann", (VISITOR,), (EMAIL,))
    assert customers.carriers(EMAIL) == ["CU-2"]


def test_a_returning_contact_reads_its_history_and_decision_with_its_profile(customers, round_trips):
    pid = customers.resolve(contact(EMAIL), now=T0, name="张伟").profile_id
    pipe = customers.client.pipeline()
    customers.queue_ticket(pipe, pid, "TM-1", channel="email", received=T0, complaint=True)
    customers.queue_agent(pipe, pid, "li.na", at=T0 + 5)
    pipe.execute()
    customers.decide_contact("TM-2", ContactOutcome(ATTACHED, pid, "TM-1", T0 + 9))
    round_trips.clear()
    found = customers.resolve_contact(contact(EMAIL), "TM-2", now=T0 + 10, name="Zhang Wei")
    assert len(round_trips) == 2
    assert (found.resolution.profile_id, found.resolution.created, found.resolution.changed) == (pid, False, False)
    assert found.history == customers.history(pid, now=T0 + 10, exclude="TM-2")
    assert (found.history.recent_complaints, found.history.last_agent_id) == (1, "li.na")
    assert found.decided == ContactOutcome(ATTACHED, pid, "TM-1", T0 + 9)


def test_a_merged_contact_reads_the_history_of_every_profile_it_became(customers):
    a = customers.resolve(contact(EMAIL), now=T0).profile_id
    b = customers.resolve(contact(PHONE), now=T0).profile_id
    pipe = customers.client.pipeline()
    customers.queue_ticket(pipe, b, "TM-1", channel="phone", received=T0, complaint=False)
    pipe.execute()
    merged = customers.resolve_contact(contact(EMAIL, PHONE), "TM-2", now=T0 + 1)  # merges b into a
    assert (merged.resolution.profile_id, merged.resolution.merged) == (a, (b,))
    assert [t.ticket_id for t in merged.history.open] == ["TM-1"]
    again = customers.resolve_contact(contact(PHONE), "TM-3", now=T0 + 2)  # the alias's history too
    assert again.resolution.profile_id == a and again.history == merged.history


def test_concurrent_new_contacts_with_one_identifier_make_one_profile(redis_client):
    stores = [CustomerStore(redis_client) for _ in range(8)]
    results = [None] * 8
    start = threading.Barrier(8)

    def work(n):
        start.wait()
        results[n] = stores[n].resolve_contact(contact(VISITOR), f"TM-{n}", now=T0)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert {r.resolution.profile_id for r in results} == {"CU-1"}
    assert sum(r.resolution.created for r in results) == 1


@pytest.mark.parametrize("complaint", [True, False])
def test_a_ticket_noted_by_script_is_noted_as_by_commands(customers, complaint):
    old = T0 - 40 * 24 * 3600  # outside the window: both trim it
    for pid in ("CU-1", "CU-2"):
        pipe = customers.client.pipeline()
        customers.queue_ticket(pipe, pid, "TM-0", channel="mail", received=old, complaint=True)
        pipe.execute()
    def both(pipe):
        customers.queue_ticket(pipe, "CU-1", "TM-1", channel="chat", received=T0, complaint=complaint)
        customers.queue_ticket_by_script(pipe, "CU-2", "TM-1", channel="chat", received=T0, complaint=complaint)

    # by EVALSHA, as the dispatcher sends it (loaded first when Redis does not have it: another
    # test may have flushed the server's scripts)
    execute_with_scripts(customers.client, both, [customers.note_ticket_script])
    client = customers.client

    def state(pid):
        base = Keys.history(pid)
        return ([client.zrange(base + s, 0, -1, withscores=True) for s in (":tickets", ":complaints", ":open")],
                client.hgetall(base + ":channels"),
                [client.ttl(base + s) > 0 for s in (":tickets", ":complaints", ":open", ":channels")])

    assert state("CU-2") == state("CU-1")
    assert state("CU-1")[0][0] == [("TM-1", T0)]
