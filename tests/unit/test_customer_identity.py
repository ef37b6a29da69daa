"""One customer across channels: identifier normalisation and the merge rules, as tables."""
import pytest

from shared import events as ev
from shared.customer_identity import (
    Identifier,
    IndexView,
    InvalidAttribute,
    InvalidIdentifier,
    MergeRefused,
    OpenTicket,
    ProfileFacts,
    attach_target,
    contact_identifiers,
    normalize_email,
    normalize_language,
    normalize_phone,
    normalize_tier,
    parse_lookup,
    plan_merge,
    plan_resolution,
)

EMAIL = Identifier("email", "zhang.wei@example.com")
PHONE = Identifier("phone", "+8613812345678")
VISITOR = Identifier("chat_visitor", "v-1")
VISITOR_2 = Identifier("chat_visitor", "v-2")
USER_1 = Identifier("external_user", "u-1")
USER_2 = Identifier("external_user", "u-2")


@pytest.mark.parametrize("raw, expected", [
    (" Zhang.Wei@Example.COM ", "zhang.wei@example.com"),
    ("<zhang.wei@example.com>", "zhang.wei@example.com"),
    ("mailto:Zhang.Wei@example.com", "zhang.wei@example.com"),
    ("张伟@例子.中国", "张伟@xn--fsqu00a.xn--fiqs8s"),
    ("zw@ＥＸＡＭＰＬＥ．ｃｏｍ", "zw@example.com"),          # full-width letters and dot (UTS 46)
    ("zw＠example.com", "zw@example.com"),                  # a full-width at sign typed on a Chinese keyboard
    ("zw@bücher.example.", "zw@xn--bcher-kva.example"),
])
def test_emails_are_one_identifier_however_written(raw, expected):
    assert normalize_email(raw) == expected


@pytest.mark.parametrize("raw", ["", "no-at-sign", "a@b@c.com", "@example.com", "a b@example.com",
                                 "zw@localhost", "zw@-bad-.com", "x" * 65 + "@example.com"])
def test_not_emails(raw):
    with pytest.raises(InvalidIdentifier):
        normalize_email(raw)


@pytest.mark.parametrize("raw, region, expected", [
    ("13812345678", "CN", "+8613812345678"),
    ("+86 138-1234-5678", "CN", "+8613812345678"),
    ("0086 138 1234 5678", "CN", "+8613812345678"),
    ("010 1234 5678", "CN", "+861012345678"),
    ("(415) 555-2671", "US", "+14155552671"),
    ("+1 415 555 2671", "CN", "+14155552671"),
])
def test_phones_become_e164(raw, region, expected):
    assert normalize_phone(raw, region) == expected


@pytest.mark.parametrize("raw", ["", "12", "not a number", "+86 1", "1" * 70])
def test_not_phones(raw):
    with pytest.raises(InvalidIdentifier):
        normalize_phone(raw)


def test_a_contact_splits_what_the_channel_proved_from_what_was_typed():
    customer = ev.Customer(name="张伟", email="Zhang.Wei@Example.com", phone="138 1234 5678", chat_visitor_id="v-1",
                           verified=["chat_visitor"])
    contact = contact_identifiers(customer)
    assert contact.verified == (VISITOR,)
    assert contact.typed == (EMAIL, PHONE)
    broken = contact_identifiers(ev.Customer(email="nonsense", phone="+8613812345678", verified=["email", "phone"]))
    assert broken.verified == (PHONE,) and broken.problems and broken.problems[0].startswith("email:")


def test_lookups_people_type():
    assert parse_lookup("cu-12") == "CU-12"
    assert parse_lookup("Zhang.Wei@example.com") == EMAIL
    assert parse_lookup("13812345678") == PHONE
    assert parse_lookup("chat_visitor:v-1") == VISITOR
    assert parse_lookup("external_user: u-1 ") == USER_1
    with pytest.raises(InvalidIdentifier):
        parse_lookup("hello")


def test_directory_attributes():
    assert normalize_tier(" VIP ") == "vip"
    assert normalize_language("zh_CN") == "zh-cn"
    for bad in ("", "v i p", "x" * 40):
        with pytest.raises(InvalidAttribute):
            normalize_tier(bad)
    with pytest.raises(InvalidAttribute):
        normalize_language("chinese please")


def view(owner=None, typed_by=None, **profiles):
    return IndexView(owner=owner or {}, typed_by=typed_by or {},
                     profiles={pid.replace("_", "-"): facts for pid, facts in profiles.items()})


# The merge rules, one line per case: (what the contact proves, what it typed, the index) →
# (profile it resolves to or "new", profiles absorbed, new maybe-links as (other, reason)).
RULES = [
    ("unknown verified identifier: a new profile",
     [EMAIL], [], view(), "new", (), ()),
    ("a known verified identifier: that profile, nothing merged",
     [EMAIL], [], view({EMAIL: "CU-3"}), "CU-3", (), ()),
    ("verified + verified of two profiles: merged, the older survives",
     [EMAIL, PHONE], [], view({EMAIL: "CU-7", PHONE: "CU-3"}), "CU-3", ("CU-7",), ()),
    ("three profiles by one contact: all into the oldest",
     [VISITOR, EMAIL, PHONE], [], view({VISITOR: "CU-9", EMAIL: "CU-7", PHONE: "CU-4"}), "CU-4", ("CU-7", "CU-9"), ()),
    ("verified + typed: never merged, linked as maybe",
     [VISITOR], [EMAIL], view({VISITOR: "CU-5", EMAIL: "CU-2"}), "CU-5", (), (("CU-2", "typed_matches_verified"),)),
    ("typed only on a new visitor: a new profile, maybe-linked to the owner",
     [VISITOR], [EMAIL], view({EMAIL: "CU-2"}), "new", (), (("CU-2", "typed_matches_verified"),)),
    ("verified identifier someone else typed earlier: maybe the other way round",
     [EMAIL], [], view({EMAIL: "CU-2"}, {EMAIL: frozenset({"CU-5"})}), "CU-2", (),
     (("CU-5", "verified_matches_typed"),)),
    ("a maybe-link already there is not made again",
     [VISITOR], [EMAIL], view({VISITOR: "CU-5", EMAIL: "CU-2"}, CU_5=ProfileFacts(maybe=frozenset({"CU-2"}))),
     "CU-5", (), ()),
    ("two company user ids are two people: the contact's user keeps its profile, the other is a maybe",
     [VISITOR, USER_2], [], view({VISITOR: "CU-1", USER_2: "CU-6"}, CU_1=ProfileFacts(external_user="u-1"),
                                 CU_6=ProfileFacts(external_user="u-2")),
     "CU-6", (), (("CU-1", "different_company_users"),)),
    ("a shared browser and a new company user: a new profile, the old one kept apart",
     [VISITOR, USER_2], [], view({VISITOR: "CU-1"}, CU_1=ProfileFacts(external_user="u-1")),
     "new", (), (("CU-1", "different_company_users"),)),
    ("a company user joins a profile without one",
     [VISITOR, USER_1], [], view({VISITOR: "CU-4", USER_1: "CU-8"}, CU_8=ProfileFacts(external_user="u-1")),
     "CU-4", ("CU-8",), ()),
    ("profiles a person kept apart are not merged by a contact",
     [EMAIL, PHONE], [], view({EMAIL: "CU-2", PHONE: "CU-3"}, CU_2=ProfileFacts(dismissed=frozenset({"CU-3"})),
                              CU_3=ProfileFacts(dismissed=frozenset({"CU-2"}))),
     "CU-2", (), ()),
    ("no verified identifier: no profile at all",
     [], [EMAIL], view({EMAIL: "CU-2"}), None, (), ()),
]


@pytest.mark.parametrize("why, verified, typed, index, profile, absorbed, links", RULES, ids=[r[0] for r in RULES])
def test_merge_rules(why, verified, typed, index, profile, absorbed, links):
    plan = plan_resolution(verified, typed, index)
    if profile == "new":
        assert plan.create and plan.profile_id is None
    else:
        assert plan.profile_id == profile and not plan.create
    assert plan.absorb == absorbed
    assert tuple((link.other, link.reason) for link in plan.maybe) == links


def test_only_unowned_identifiers_are_claimed_and_typed_ones_recorded_once():
    index = view({EMAIL: "CU-3", VISITOR: "CU-3"}, CU_3=ProfileFacts(typed=frozenset({PHONE})))
    plan = plan_resolution([VISITOR, VISITOR_2], [PHONE, EMAIL], index)
    assert plan.profile_id == "CU-3"
    assert plan.claim == (VISITOR_2,)
    assert plan.add_typed == ()  # the phone was typed before, the email is its own verified one
    assert plan.changes
    assert not plan_resolution([VISITOR], [PHONE], index).changes


def test_explicit_merge_keeps_the_older_and_refuses_two_company_users():
    assert plan_merge("CU-9", "CU-2", view()) == ("CU-2", "CU-9")
    with pytest.raises(MergeRefused):
        plan_merge("CU-2", "CU-2", view())
    with pytest.raises(MergeRefused):
        plan_merge("CU-1", "CU-2", view(CU_1=ProfileFacts(external_user="u-1"), CU_2=ProfileFacts(external_user="u-2")))


def test_attach_target_is_the_latest_open_ticket_of_another_channel_within_the_window():
    now = 100_000.0
    tickets = [OpenTicket("TM-1", "email", now - 7200), OpenTicket("TM-2", "chat", now - 60),
               OpenTicket("TM-3", "phone", now - 30), OpenTicket("TM-4", "email", now - 100_000)]
    target = attach_target(tickets, channel="phone", ticket_id="TM-9", mode="attach", within_seconds=3 * 3600, now=now)
    assert (target.mode, target.into_ticket_id) == ("attach", "TM-2")
    assert attach_target(tickets, channel="phone", ticket_id="TM-9", mode="off", within_seconds=3600,
                         now=now).mode == "none"
    late = attach_target(tickets[:1], channel="phone", ticket_id="TM-9", mode="link", within_seconds=3600, now=now)
    assert late.mode == "none" and late.into_ticket_id is None
    same = attach_target(tickets[2:3], channel="phone", ticket_id="TM-9", mode="attach", within_seconds=3600, now=now)
    assert same.mode == "none"  # the same channel is the channel's own threading
