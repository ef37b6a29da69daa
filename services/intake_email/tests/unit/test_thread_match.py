"""Which ticket a mail follows up: each rule, their order, and the attacks they must resist."""
from datetime import datetime, timedelta, timezone
from email import message_from_string

import pytest

from shared import mail_tokens
from services.intake_email import thread_match as tm
from services.intake_email.thread_match import Decision, Lookups, ThreadFacts

SECRET = b"thread-match-test-secret"
OURS = "support@ticketmesh.test"
CUSTOMER = "zhang.wei@example.com"


def signed_id(ticket: str, notification: str = "n1") -> str:
    return mail_tokens.message_id(SECRET, ticket, notification, "ticketmesh.test").strip("<>")


def plus(ticket: str) -> str:
    return mail_tokens.reply_address(SECRET, ticket, OURS)


def facts(*, sender=CUSTOMER, to=(OURS,), in_reply_to=(), references=(), subject="hello", message_id="m@x"):
    return ThreadFacts(from_email=sender, recipients=tuple(to), in_reply_to=tuple(in_reply_to),
                       references=tuple(references), subject=subject, message_id=message_id)


CASES = [
    # (name, facts, lookups, expected ticket, expected by)
    ("signed id in In-Reply-To", facts(in_reply_to=[signed_id("TM-10001")]), Lookups(), "TM-10001",
     tm.BY_SIGNED_MESSAGE_ID),
    # Outlook keeps only References (Chatwoot #10028)
    ("Outlook: only References", facts(references=["a@x", signed_id("TM-10002"), "b@y"]), Lookups(), "TM-10002",
     tm.BY_SIGNED_MESSAGE_ID),
    ("thread began elsewhere, our id deep in References",
     facts(in_reply_to=["z@other"],
           references=["first@other", signed_id("TM-10003")] + [f"r{i}@other" for i in range(60)]),
     Lookups(), "TM-10003", tm.BY_SIGNED_MESSAGE_ID),
    ("newest signed id wins", facts(references=[signed_id("TM-10001"), signed_id("TM-10009")]), Lookups(),
     "TM-10009", tm.BY_SIGNED_MESSAGE_ID),
    ("only the plus address", facts(to=[plus("TM-10004")]), Lookups(), "TM-10004", tm.BY_PLUS_ADDRESS),
    ("plus address in Cc with others", facts(to=["boss@example.com", plus("TM-10004").upper()]), Lookups(),
     "TM-10004", tm.BY_PLUS_ADDRESS),
    ("signed id beats plus address", facts(in_reply_to=[signed_id("TM-10001")], to=[plus("TM-10004")]), Lookups(),
     "TM-10001", tm.BY_SIGNED_MESSAGE_ID),
    ("signed id beats a stored id and the tag",
     facts(in_reply_to=[signed_id("TM-10001")], subject="[#TM-10005]"),
     Lookups(chain_ticket="TM-10006", chain_index=0, participant_of=frozenset({"TM-10005"})), "TM-10001",
     tm.BY_SIGNED_MESSAGE_ID),
    ("stored id in the chain", facts(references=["customer-first@example.com"]),
     Lookups(chain_ticket="TM-10006", chain_index=0), "TM-10006", tm.BY_REFERENCES),
    ("stored id beats the tag", facts(references=["c@x"], subject="Re: [#TM-10005]"),
     Lookups(chain_ticket="TM-10006", chain_index=0, participant_of=frozenset({"TM-10005"})), "TM-10006",
     tm.BY_REFERENCES),
    ("tag from a participant, no headers", facts(subject="Re: [#TM-10005] 发票"),
     Lookups(participant_of=frozenset({"TM-10005"}), known_tickets=frozenset({"TM-10005"})), "TM-10005",
     tm.BY_SUBJECT_TAG),
    # Zammad #5064: a stranger quoting a number must not get into the ticket
    ("hijack: stranger quotes the tag", facts(sender="mallory@evil.test", subject="Re: [#TM-10005]"),
     Lookups(known_tickets=frozenset({"TM-10005"})), None, tm.NEW_TICKET),
    ("forged signed id", facts(in_reply_to=[signed_id("TM-10001").replace("TM-10001", "TM-10002")]), Lookups(),
     None, tm.NEW_TICKET),
    ("forged plus address", facts(to=[plus("TM-10001").replace("TM-10001", "TM-10002")]), Lookups(), None,
     tm.NEW_TICKET),
    ("unsigned old-style id of ours", facts(in_reply_to=["tm.TM-10001.n1@ticketmesh.test"]), Lookups(), None,
     tm.NEW_TICKET),
    ("nothing at all", facts(), Lookups(), None, tm.NEW_TICKET),
]


@pytest.mark.parametrize("name,mail,lookups,ticket,by", CASES, ids=[c[0] for c in CASES])
def test_decide(name, mail, lookups, ticket, by):
    decision = tm.decide(mail, SECRET, lookups)
    assert (decision.ticket_id, decision.by) == (ticket, by)


def test_ignored_tag_says_why():
    stranger = tm.decide(facts(sender="mallory@evil.test", subject="[#TM-10005]"), SECRET,
                         Lookups(known_tickets=frozenset({"TM-10005"})))
    assert (stranger.ignored_tag, stranger.ignored_why) == ("TM-10005", tm.TAG_SENDER_NOT_PARTICIPANT)
    unknown = tm.decide(facts(subject="[#TM-99999]"), SECRET, Lookups())
    assert (unknown.ignored_tag, unknown.ignored_why) == ("TM-99999", tm.TAG_UNKNOWN_TICKET)


def test_evidence_names_the_stored_id_that_matched():
    mail = facts(in_reply_to=["near@x"], references=["far@x"])
    assert mail.chain == ("near@x", "far@x")
    assert tm.decide(mail, SECRET, Lookups(chain_ticket="TM-1", chain_index=1)).evidence == "far@x"


def test_lookup_plan_asks_only_for_what_can_decide():
    signed = tm.lookup_plan(facts(in_reply_to=[signed_id("TM-10001")], subject="[#TM-5]"), SECRET)
    assert signed == tm.LookupPlan(chain=(), tickets=("TM-10001",))
    unsigned = tm.lookup_plan(facts(in_reply_to=["a@x"], references=["b@x", "a@x"], subject="Re: [#TM-5]"), SECRET)
    assert unsigned == tm.LookupPlan(chain=("a@x", "b@x"), tickets=("TM-5",))


def test_chain_is_capped_and_skips_the_mail_itself():
    mail = facts(references=[f"r{i}@x" for i in range(2000)] + ["m@x"], message_id="m@x")
    assert len(mail.chain) == tm.MAX_CHAIN
    assert mail.chain[0] == "r1999@x" and "m@x" not in mail.chain


NOW = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
WINDOW = timedelta(days=14)


@pytest.mark.parametrize("resolved_at,expected", [
    (None, tm.Route("TM-1")),
    (NOW - timedelta(days=3), tm.Route("TM-1")),
    (NOW - WINDOW, tm.Route("TM-1")),
    (NOW - WINDOW - timedelta(seconds=1), tm.Route(None, linked_ticket_id="TM-1", why=tm.LINK_REOPEN_WINDOW_PASSED)),
])
def test_route_reopens_within_the_window_and_links_after_it(resolved_at, expected):
    decision = Decision("TM-1", tm.BY_SIGNED_MESSAGE_ID)
    assert tm.route(decision, known=True, resolved_at=resolved_at, received_at=NOW, reopen_window=WINDOW) == expected


@pytest.mark.parametrize("by", [tm.BY_SIGNED_MESSAGE_ID, tm.BY_PLUS_ADDRESS, tm.BY_REFERENCES, tm.BY_SUBJECT_TAG])
def test_route_of_a_ticket_intake_no_longer_knows_is_a_new_ticket_linked_to_it(by):
    # Its records expired: as a follow-up it would reach a ticket agent_desk no longer holds.
    assert tm.route(Decision("TM-1", by), known=False, resolved_at=None, received_at=NOW,
                    reopen_window=WINDOW) == tm.Route(None, linked_ticket_id="TM-1", why=tm.LINK_UNKNOWN_TICKET)


def test_route_of_a_new_ticket_is_new():
    assert tm.route(Decision(None, tm.NEW_TICKET), known=False, resolved_at=None, received_at=NOW,
                    reopen_window=WINDOW) == tm.Route(None)


def test_participants_leave_us_out():
    people = tm.participants(sender="Zhang.Wei@example.com",
                             recipients=(OURS, plus("TM-1"), "li.si@example.com", "SUPPORT@ticketmesh.test"),
                             our_address=OURS)
    assert people == frozenset({"zhang.wei@example.com", "li.si@example.com"})

