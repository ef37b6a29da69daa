"""The customer's projection of a ticket: built from events in any order, each counted once."""
import itertools
from datetime import datetime, timedelta, timezone

from shared import events as ev

from services.intake_chat import status_view
from services.intake_chat.customer_input import Reply, SurveyAnswer
from services.intake_chat.customer_events import reply_event, survey_event
from services.intake_chat.status_view import apply, customer_status, expected_response_at, public

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=timezone.utc)
TICKET = "TM-10001"
NAMES = {"li.na": "李娜"}


def at(minutes):
    return T0 + timedelta(minutes=minutes)


def event(source, event_type, minutes, **fields):
    body = ev.make_event(source, event_type, now=at(minutes), trace_id="trace-1", ticket_id=TICKET, **fields)
    return ev.parse_event(source, event_type, body)


def received(channel="email", source=ev.INTAKE_EMAIL, minutes=0, **customer):
    return event(source, ev.TICKET_RECEIVED, minutes, channel=channel, subject="Parcel <b>late</b>",
                 text="Where is my parcel?", received_at=at(minutes),
                 customer={"name": "Ann", "email": "ann@example.com", "language": "en", **customer})


def replied(minutes, reply_id="r-1", text="We are checking.", agent_id="li.na"):
    return event(ev.AGENT_DESK, ev.AGENT_REPLIED, minutes, agent_id=agent_id, channel="email", text=text,
                 reply_id=reply_id, customer={"name": "Ann"})


def customer_wrote(minutes, message_id="m-2", text="Any news?"):
    return event(ev.INTAKE_EMAIL, ev.MESSAGE_RECEIVED, minutes, channel="email", customer={"name": "Ann"},
                 text=text, message_id=message_id, received_at=at(minutes))


def status_changed(minutes, status):
    return event(ev.AGENT_DESK, ev.TICKET_STATUS_CHANGED, minutes, status=status, paused=status != "open",
                 agent_id="li.na")


def resolved(minutes, resolution="solved"):
    return event(ev.AGENT_DESK, ev.TICKET_RESOLVED, minutes, agent_id="li.na", channel="email",
                 resolution=resolution)


def reopened(minutes):
    return event(ev.AGENT_DESK, ev.TICKET_REOPENED, minutes, by="customer", agent_id="li.na", channel="email")


def assigned(minutes, agent_id="li.na"):
    return event(ev.DISPATCHER, ev.TICKET_ASSIGNED, minutes, agent_id=agent_id, channel="email", priority="P3",
                 required_skills=["general"], decision={"considered": 1, "eligible": 1, "reason": "best"})


def unassigned(minutes, agent_id="li.na"):
    return event(ev.DISPATCHER, ev.TICKET_UNASSIGNED, minutes, agent_id=agent_id, reason="offer_expired")


def clock(minutes, name, change, due_minutes=None):
    return event(ev.SLA_WATCHER, ev.SLA_CLOCK_CHANGED, minutes, clock=name, change=change, policy="standard",
                 target_seconds=3600, due_at=at(due_minutes) if due_minutes is not None else None)


def build(events, view=None):
    for item in events:
        view = apply(view, item)
    return view


def test_a_received_ticket_shows_its_opening_message_and_waits_for_an_agent():
    view = build([received()])
    assert view.known and view.channel == "email" and view.subject == "Parcel <b>late</b>"
    assert customer_status(view) == "received"
    shown = public(view, lang="en", agent_names=NAMES, now=at(1))
    assert shown["status_label"] == "Received" and shown["can_reply"]
    assert shown["messages"] == [{"id": "opening", "from": "customer", "author": "You",
                                  "text": "Where is my parcel?", "at": at(0).isoformat()}]


def test_the_customer_status_follows_assignment_waiting_and_resolution():
    steps = [(assigned(1), "assigned"), (status_changed(2, "waiting_on_customer"), "waiting_on_you"),
             (customer_wrote(3), "assigned"), (resolved(4), "resolved"), (reopened(5), "assigned")]
    view = build([received()])
    for item, expected in steps:
        view = apply(view, item)
        assert customer_status(view) == expected, item
    assert customer_status(build([unassigned(6)], view)) == "received"


def test_agents_appear_by_display_name_and_an_unknown_agent_as_support():
    view = build([received(), replied(1), replied(2, reply_id="r-2", agent_id="ghost")])
    shown = public(view, lang="zh", agent_names=NAMES, now=at(3))
    assert [(m["from"], m["author"]) for m in shown["messages"]] == [("customer", "您"), ("agent", "李娜"),
                                                                      ("agent", "客服")]
    assert "li.na" not in str(shown) and "ghost" not in str(shown)


def test_every_order_of_the_same_events_gives_the_same_view_and_repeats_change_nothing():
    events = [received(), assigned(1), replied(2), status_changed(3, "waiting_on_customer"), customer_wrote(4),
              clock(4, "next_response", "activated", due_minutes=64), resolved(9)]
    expected = build(events)
    for order in itertools.permutations(events):
        assert build(order) == expected
    assert build(events, expected) == expected  # every event redelivered
    assert customer_status(expected) == "resolved" and len(expected.messages) == 3


def test_a_stale_status_change_does_not_undo_a_newer_customer_message():
    view = build([received(), customer_wrote(5), status_changed(3, "waiting_on_customer")])
    assert customer_status(view) == "received"


def test_the_expected_response_time_is_the_running_clock_and_not_while_waiting_or_paused():
    view = build([received(), clock(0, "first_response", "activated", due_minutes=60)])
    assert expected_response_at(view) == at(60)
    fulfilled = build([replied(10), clock(10, "first_response", "fulfilled")], view)
    assert expected_response_at(fulfilled) is None
    again = build([customer_wrote(20), clock(20, "next_response", "activated", due_minutes=50)], fulfilled)
    assert expected_response_at(again) == at(50)
    assert expected_response_at(apply(again, clock(21, "next_response", "paused"))) is None
    assert expected_response_at(apply(again, status_changed(21, "waiting_on_customer"))) is None
    assert expected_response_at(apply(again, clock(30, "resolution", "activated", due_minutes=25))) == at(50)
    late = public(again, lang="en", agent_names=NAMES, now=at(51))
    assert late["overdue"] and late["expected_response_at"] == at(50).isoformat()


def test_a_clock_event_arriving_before_the_ticket_waits_in_an_unknown_view():
    early = build([clock(0, "first_response", "activated", due_minutes=60)])
    assert not early.known and status_view.reply_refusal(early, at(1)) == "reply_not_ready"
    assert public(early, lang="en", agent_names=NAMES, now=at(1))["known"] is False
    assert build([received()], early) == build([clock(0, "first_response", "activated", due_minutes=60)],
                                                build([received()]))


def test_contacts_are_kept_as_given_hashes_without_duplicates():
    view = apply(None, received(), contact_hashes=["h-email"])
    view = apply(view, customer_wrote(1), contact_hashes=["h-email", "h-phone"])
    assert view.contacts == ("h-email", "h-phone")
    assert "ann@example.com" not in view.model_dump_json()


def test_a_phone_ticket_shows_a_call_instead_of_the_internal_callback_note():
    view = build([received(channel="phone", source=ev.INTAKE_PHONE, phone="+8613812345678", email=None)])
    shown = public(view, lang="en", agent_names=NAMES, now=at(1))
    assert shown["messages"][0]["from"] == "call" and "call you back" in shown["messages"][0]["text"]


def test_long_texts_are_clipped_and_the_oldest_messages_fall_off():
    view = build([received()] + [customer_wrote(i, message_id=f"m-{i}", text="字" * 20_000) for i in range(1, 205)])
    assert len(view.messages) == status_view.MAX_MESSAGES and view.messages[-1].id == "m:m-204"
    assert len(view.messages[-1].text) == status_view.MESSAGE_SHOWN_MAX_CHARS


def test_replies_are_refused_for_spam_and_merged_and_long_after_resolution():
    view = build([received()])
    assert status_view.reply_refusal(apply(view, resolved(1, "spam")), at(2)) == "reply_closed"
    assert status_view.reply_refusal(apply(view, resolved(1, "merged")), at(2)) == "reply_closed"
    solved = apply(view, resolved(1))
    assert status_view.reply_refusal(solved, at(2)) is None  # reopens it
    assert status_view.reply_refusal(solved, at(1) + timedelta(days=15)) == "reply_too_late"
    assert public(apply(view, resolved(1, "spam")), lang="en", agent_names={}, now=at(2))["status_label"] == "Closed"


def test_only_a_solved_ticket_has_a_survey():
    view = build([received()])
    assert status_view.survey_refusal(None) == "survey_unknown"
    assert status_view.survey_refusal(view) == "survey_not_resolved"
    for resolution in ("spam", "merged", "auto_closed"):
        assert status_view.survey_refusal(apply(view, resolved(1, resolution))) == "survey_not_wanted"
    assert status_view.survey_refusal(apply(view, resolved(1))) is None
    assert status_view.survey_refusal(build([resolved(1), reopened(2)], view)) == "survey_not_resolved"


def test_a_status_page_reply_is_a_message_on_the_tickets_own_channel_with_stable_ids():
    view = build([received()])
    body = reply_event(view, Reply("c-1", "More details"), now=at(3))
    again = reply_event(view, Reply("c-1", "More details"), now=at(4))
    parsed = ev.parse_event(ev.INTAKE_CHAT, ev.MESSAGE_RECEIVED, body)
    assert parsed.channel == "email" and parsed.message_id == "sp-c-1" and parsed.trace_id == "trace-1"
    assert parsed.source == {"via": "status_page"} and body["event_id"] == again["event_id"]
    assert build([parsed], view) == build([parsed, parsed], view)


def test_a_survey_answer_names_the_resolver_and_has_one_event_id_per_ticket():
    view = build([received(), resolved(5)])
    first = survey_event(view, SurveyAnswer(4, "quick"), now=at(6))
    other = survey_event(view, SurveyAnswer(1, ""), now=at(7))
    parsed = ev.parse_event(ev.INTAKE_CHAT, ev.CSAT_SUBMITTED, first)
    assert (parsed.score, parsed.comment, parsed.agent_id, parsed.channel) == (4, "quick", "li.na", "email")
    assert first["event_id"] == other["event_id"]


def attached(minutes, *, contact="TM-10009", into=TICKET, channel="chat"):
    body = ev.make_event(ev.DISPATCHER, ev.TICKET_ATTACHED, now=at(minutes), trace_id="trace-2", ticket_id=contact,
                         into_ticket_id=into, channel=channel, customer={"name": "Ann"}, text="Also: wrong colour",
                         received_at=at(minutes))
    return ev.parse_event(ev.DISPATCHER, ev.TICKET_ATTACHED, body)


def test_a_contact_folded_into_the_open_ticket_is_a_customer_message_there_and_points_there():
    into = build([received(), status_changed(1, "waiting_on_customer")])
    after = status_view.apply_attachment(into, attached(2), contact_hashes=["h-chat"])
    assert [m.text for m in after.messages] == ["Where is my parcel?", "Also: wrong colour"]
    assert customer_status(after) == "received" and after.contacts == ("h-chat",)
    assert status_view.apply_attachment(after, attached(2), contact_hashes=["h-chat"]) == after  # redelivered
    own = apply(None, attached(2))
    assert own.attached_to == TICKET and not own.known
