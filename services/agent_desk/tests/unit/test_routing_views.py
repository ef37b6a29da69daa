"""Offers, declines, unassignment, classification, decision records, SLA clocks, notes, reopen."""
from datetime import timedelta

import pytest

from services.agent_desk import supervisor
from services.agent_desk import tickets as tk
from services.agent_desk.tests.factories import (offer, sla_event, ticket_assigned, ticket_classified,
                                                 ticket_escalated, ticket_queued, ticket_received, ticket_transferred,
                                                 ticket_unassigned)
from services.agent_desk.tests.unit.test_tickets import NOW, received_view
from shared import events as ev
from shared.roster import AgentProfile


def parse(source: str, event_type: str, body: dict):
    return ev.parse_event(source, event_type, body)


def offered(agent_id: str = "li.na", seconds: float = 60, at=NOW) -> tk.TicketView:
    return tk.with_assignment(received_view(), parse("dispatcher", "ticket_assigned", offer(agent_id=agent_id,
                                                                                           seconds=seconds, at=at)))


def test_an_offer_carries_its_expiry_and_attempt_and_cannot_be_accepted_late():
    view = offered(seconds=30)
    assert view.offer_expires_at == NOW + timedelta(seconds=30) and view.attempt == 1
    accepted = tk.accept(view, "li.na", "agent", NOW + timedelta(seconds=29))
    assert accepted.status == "accepted" and accepted.offer_expires_at is None
    with pytest.raises(tk.ActionRefused) as refused:
        tk.accept(view, "li.na", "agent", NOW + timedelta(seconds=31))
    assert (refused.value.status, refused.value.code) == (409, "offer_expired")


def test_decline_releases_the_offer_and_a_redelivered_offer_does_not_come_back():
    event = parse("dispatcher", "ticket_assigned", offer(at=NOW))
    view = tk.with_assignment(received_view(), event)
    declined, reason = tk.decline(view, "li.na", "  too busy ", NOW + timedelta(seconds=5))
    assert reason == "too busy"
    assert (declined.status, declined.agent_id, declined.declined_by) == ("queued", None, ["li.na"])
    assert tk.already_declined(declined, "li.na")
    assert tk.with_assignment(declined, event).agent_id is None  # the same offer redelivered
    later = parse("dispatcher", "ticket_assigned", offer(agent_id="sam.taylor", attempt=2, at=NOW + timedelta(seconds=6)))
    moved = tk.with_assignment(declined, later)
    assert (moved.agent_id, moved.status, moved.attempt) == ("sam.taylor", "assigned", 2)
    for who, current in (("sam.taylor", view), ("li.na", tk.accept(view, "li.na", "agent", NOW))):
        with pytest.raises(tk.ActionRefused):
            tk.decline(current, who, "", NOW)  # not offered to them / already accepted


def test_unassignment_removes_the_ticket_only_from_the_agent_who_held_it():
    view = offered()
    gone = tk.with_unassigned(view, parse("dispatcher", "ticket_unassigned",
                                          ticket_unassigned(reason="offer_expired", at=NOW + timedelta(seconds=61))))
    assert (gone.status, gone.agent_id, gone.queued_reason) == ("queued", None, "unassigned: offer_expired")
    # An unassignment of li.na arriving after the ticket moved to sam changes nothing.
    moved = tk.with_assignment(view, parse("dispatcher", "ticket_assigned",
                                           ticket_assigned(agent_id="sam.taylor", at=NOW + timedelta(seconds=2))))
    late = parse("dispatcher", "ticket_unassigned", ticket_unassigned(agent_id="li.na", at=NOW + timedelta(seconds=3)))
    assert tk.with_unassigned(moved, late) == moved
    # And one about an earlier hold does not undo a newer assignment of the same agent.
    early = parse("dispatcher", "ticket_unassigned", ticket_unassigned(at=NOW - timedelta(seconds=1)))
    assert tk.with_unassigned(view, early) == view


def test_classification_fills_tags_category_and_signals():
    view = tk.with_classification(received_view(), parse("dispatcher", "ticket_classified", ticket_classified()))
    assert (view.tags, view.category, view.signals, view.priority, view.customer_tier) == \
        (["invoice", "refund"], "billing", ["complaint_risk"], "P1", "vip")


def test_every_routing_attempt_keeps_its_decision_once():
    queued = parse("dispatcher", "ticket_queued", ticket_queued(at=NOW))
    assigned = parse("dispatcher", "ticket_assigned", offer(at=NOW + timedelta(seconds=1)))
    view = tk.with_queued(received_view(), queued)
    view = tk.with_assignment(tk.with_assignment(tk.with_queued(view, queued), assigned), assigned)
    assert [(r.outcome, r.agent_id) for r in view.decisions] == [("queued", None), ("assigned", "li.na")]
    assert view.decisions[0].decision.rejected_counts == {"presence": 3}
    assert "decisions" not in view.for_console()


def test_sla_clock_keeps_a_breach_and_its_due_time():
    warning = parse("sla_watcher", "sla_warning", sla_event(due_in=300))
    view = tk.with_sla(offered(), warning)
    assert tk.sla_state(view) == "warning" and view.for_console()["sla_due_at"] == warning.due_at.isoformat()
    breach_body = sla_event(breached=True)
    breach_body["due_at"] = warning.due_at.isoformat()
    breached = tk.with_sla(view, parse("sla_watcher", "sla_breached", breach_body))
    assert tk.sla_state(breached) == "breached"
    assert tk.with_sla(breached, warning) == breached  # a late warning does not undo the breach


def test_transfer_and_escalation_notes_are_added_once():
    transferred = parse("dispatcher", "ticket_transferred", ticket_transferred())
    escalated = parse("sla_watcher", "ticket_escalated", ticket_escalated())
    view = offered()
    for note in (tk.transfer_note(transferred), tk.escalation_note(escalated)):
        view = tk.with_message(tk.with_message(view, note), note)
    assert [m.author for m in view.messages] == ["system", "system"]
    assert view.messages[0].text == "Transferred from li.na to sam.taylor by li.na (assigned): needs technical"
    assert view.messages[1].text.startswith("Escalated to L2 (level 1")


def test_reopen_by_the_last_agent_or_a_supervisor_only_when_resolved():
    resolved = tk.resolve(offered(), "li.na", "agent", NOW)
    reopened = tk.reopen(resolved, "li.na", "agent")
    assert (reopened.status, reopened.agent_id, reopened.resolved_at) == ("reopened", "li.na", None)
    assert tk.reopen(reopened, "li.na", "agent") == reopened
    assert tk.reopen(resolved, "wang.fang", "supervisor").status == "reopened"
    with pytest.raises(tk.ActionRefused) as other:
        tk.reopen(resolved, "sam.taylor", "agent")
    with pytest.raises(tk.ActionRefused) as still_open:
        tk.reopen(offered(), "li.na", "agent")
    assert (other.value.status, still_open.value.status) == (403, 409)
    assert tk.resolve(reopened, "li.na", "agent", NOW).status == "resolved"


def test_internal_notes_are_marked_as_such():
    view = offered()
    note = tk.internal_note("n1", "li.na", tk.note_text(view, "li.na", "agent", "  客户是老用户 "), NOW)
    view = tk.with_message(view, note)
    assert (view.messages[0].author, view.messages[0].text) == ("note", "客户是老用户")
    assert view.for_console()["notes_count"] == 1
    with pytest.raises(tk.ActionRefused):
        tk.note_text(view, "sam.taylor", "agent", "x")


@pytest.mark.parametrize("body,code", [
    ({"to_agent_id": "sam.taylor", "to_group": "billing", "reason": "x"}, "invalid_target"),
    ({"reason": "x"}, "invalid_target"),
    ({"to_agent_id": "nobody", "reason": "x"}, "unknown_agent"),
    ({"to_group": "sales", "reason": "x"}, "unknown_group"),
    ({"to_agent_id": "sam.taylor"}, "invalid_reason"),
    ({"to_agent_id": "sam.taylor", "reason": " "}, "invalid_reason"),
    ({"to_agent_id": "sam.taylor", "reason": "x" * 501}, "invalid_reason"),
])
def test_transfer_requests_name_exactly_one_known_target_and_a_reason(body, code):
    with pytest.raises(tk.ActionRefused) as refused:
        tk.transfer_target(body, agents={"li.na", "sam.taylor"}, groups={"billing"})
    assert (refused.value.status, refused.value.code) == (400, code)
    assert tk.transfer_target({"to_group": "billing", "reason": " r "}, agents=set(), groups={"billing"}) == \
        (None, "billing", "r")


def test_only_supervisors_reassign_and_agents_transfer_their_open_tickets():
    view = offered()
    with pytest.raises(tk.ActionRefused) as refused:
        tk.may_reassign(view, "agent", "sam.taylor")
    assert refused.value.code == "not_supervisor"
    tk.may_reassign(view, "supervisor", "sam.taylor")
    tk.may_transfer(view, "li.na", "agent", "sam.taylor")
    with pytest.raises(tk.ActionRefused):
        tk.may_transfer(view, "li.na", "agent", "li.na")


def test_contact_is_masked_unless_shown_to_the_assignee_or_a_supervisor():
    view = offered()
    full, masked = view.for_console(), view.for_console(full_contact=False)
    assert full["customer"]["email"] == "zhang.wei@example.com"
    assert masked["customer"]["email"] == "z***@example.com" and "zhang.wei" not in str(masked)


def test_customer_keys_link_tickets_across_channels():
    customer = ev.Customer(name="x", email=" Zhang.Wei@Example.com", phone="+86 138-0000-1234", chat_visitor_id="v1")
    assert tk.customer_keys(customer) == ["chat:v1", "email:zhang.wei@example.com", "phone:+8613800001234"]


def test_supervisor_boards():
    def queued(ticket_id, skills, priority, minutes_ago):
        body = ticket_queued(ticket_id, skills=skills, priority=priority, at=NOW - timedelta(minutes=minutes_ago))
        view = tk.view_from_received(parse("intake_email", "ticket_received", ticket_received(ticket_id)))
        return tk.with_queued(view, parse("dispatcher", "ticket_queued", body))

    board = supervisor.queues([queued("A", ("billing",), "P2", 5), queued("B", ("billing",), "P1", 2),
                               queued("C", (), "P3", 1)], NOW)
    assert [(q["skill"], q["count"], q["by_priority"]) for q in board] == \
        [("billing", 2, {"P1": 1, "P2": 1}), ("general", 1, {"P3": 1})]
    assert 299 <= board[0]["oldest_wait_seconds"] <= 301 and board[0]["tickets"][0]["ticket_id"] == "A"

    li_na = AgentProfile(agent_id="li.na", name="李娜", password_hash="scrypt$1", capacity={"email": 10})
    sam = AgentProfile(agent_id="sam.taylor", name="Sam", password_hash="scrypt$1")
    agents = supervisor.agents([sam, li_na], {"li.na": "online"}, {"li.na": [offered()]})
    assert [(a["agent_id"], a["presence"], a["load"], a["offers"]) for a in agents] == \
        [("li.na", "online", {"email": 1}, 1), ("sam.taylor", "offline", {}, 0)]

    soon = tk.with_sla(offered(), parse("sla_watcher", "sla_warning", sla_event(due_in=60)))
    later = tk.with_sla(offered(), parse("sla_watcher", "sla_breached", sla_event(breached=True, due_in=-30)))
    risk = supervisor.at_risk([soon, later, offered(), tk.resolve(soon, "li.na", "agent", NOW)], NOW)
    assert [r["sla_state"] for r in risk] == ["breached", "warning"]
