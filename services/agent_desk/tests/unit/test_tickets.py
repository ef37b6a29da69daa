from datetime import datetime, timedelta, timezone

import pytest

from services.agent_desk import tickets as tk
from services.agent_desk.tests.factories import message_received, ticket_assigned, ticket_received
from shared import events as ev

NOW = datetime.now(timezone.utc)


def received_view() -> tk.TicketView:
    return tk.view_from_received(ev.parse_event("intake_email", "ticket_received", ticket_received()))


def assigned_view(agent_id: str = "li.na") -> tk.TicketView:
    event = ev.parse_event("dispatcher", "ticket_assigned", ticket_assigned(agent_id=agent_id))
    return tk.with_assignment(received_view(), event)


def test_assignment_fills_the_view_and_is_idempotent():
    event = ev.parse_event("dispatcher", "ticket_assigned", ticket_assigned())
    view = tk.with_assignment(received_view(), event)
    assert (view.status, view.agent_id, view.priority, view.required_skills) == ("assigned", "li.na", "P2", ["billing"])
    assert view.decision.reason == "billing 5/5, zh, load 0/10"
    accepted = tk.accept(view, "li.na", "agent", NOW)
    assert tk.with_assignment(accepted, event) == accepted  # a redelivered assignment keeps "accepted"


def test_reassignment_to_someone_else_resets_acceptance():
    accepted = tk.accept(assigned_view(), "li.na", "agent", NOW)
    moved = tk.with_assignment(accepted, ev.parse_event("dispatcher", "ticket_assigned", ticket_assigned(agent_id="sam.taylor")))
    assert (moved.status, moved.agent_id, moved.accepted_at) == ("assigned", "sam.taylor", None)


def test_older_assignment_redelivered_after_a_transfer_is_ignored():
    first = ev.parse_event("dispatcher", "ticket_assigned", ticket_assigned(agent_id="li.na", at=NOW))
    transfer = ev.parse_event("dispatcher", "ticket_assigned",
                              ticket_assigned(agent_id="sam.taylor", at=NOW + timedelta(minutes=1)))
    moved = tk.with_assignment(tk.with_assignment(received_view(), first), transfer)
    assert tk.with_assignment(moved, first).agent_id == "sam.taylor"


def test_late_queued_does_not_undo_an_assignment():
    queued = ev.TicketQueued(event_id="e", occurred_at=NOW, schema_version=1, trace_id="t", ticket_id="TM-10001",
                             channel="email", priority="P3", required_skills=[], reason="no agent online")
    assert tk.with_queued(received_view(), queued).status == "queued"
    assert tk.with_queued(assigned_view(), queued).status == "assigned"


def test_customer_messages_are_appended_once():
    message = tk.customer_message(ev.parse_event("intake_email", "message_received", message_received()))
    once = tk.with_message(received_view(), message)
    assert tk.with_message(once, message) == once and [m.text for m in once.messages] == ["补充：税号是 123。"]


def test_a_customer_message_reopens_a_resolved_ticket_with_its_last_assignee_once():
    message = tk.customer_message(ev.parse_event("intake_email", "message_received", message_received()))
    accepted = tk.accept(assigned_view(), "li.na", "agent", NOW)
    resolved = tk.resolve(accepted, "li.na", "agent", NOW)
    reopened = tk.with_customer_message(resolved, message)
    # Reopened, not assigned by the desk: the dispatcher routes it (preferring li.na).
    assert (reopened.status, reopened.agent_id, reopened.resolved_at) == ("reopened", "li.na", None)
    assert reopened.reopened_by_message == message.message_id
    assert [m.text for m in reopened.messages] == ["补充：税号是 123。"]
    # Redelivered after the agent resolved again: nothing changes, the ticket stays resolved.
    resolved_again = tk.resolve(reopened, "li.na", "agent", NOW)
    assert tk.with_customer_message(resolved_again, message) == resolved_again


def test_a_customer_message_on_an_open_ticket_does_not_reopen_anything():
    message = tk.customer_message(ev.parse_event("intake_email", "message_received", message_received()))
    view = tk.with_customer_message(assigned_view(), message)
    assert view.status == "assigned" and view.reopened_by_message is None and len(view.messages) == 1


def test_only_the_assignee_or_a_supervisor_may_act():
    view = assigned_view()
    for action in (lambda: tk.accept(view, "sam.taylor", "agent", NOW), lambda: tk.resolve(view, "sam.taylor", "agent", NOW),
                   lambda: tk.reply_text(view, "sam.taylor", "agent", "hi")):
        with pytest.raises(tk.ActionRefused) as refused:
            action()
        assert refused.value.status == 403
    assert tk.accept(view, "wang.fang", "supervisor", NOW).status == "accepted"


def test_accept_and_resolve_are_idempotent_and_ordered():
    view = assigned_view()
    accepted = tk.accept(view, "li.na", "agent", NOW)
    assert tk.accept(accepted, "li.na", "agent", NOW + timedelta(seconds=5)) == accepted
    resolved = tk.resolve(accepted, "li.na", "agent", NOW)
    assert tk.resolve(resolved, "li.na", "agent", NOW) == resolved
    with pytest.raises(tk.ActionRefused) as refused:
        tk.accept(resolved, "li.na", "agent", NOW)
    assert refused.value.status == 409
    with pytest.raises(tk.ActionRefused):
        tk.resolve(received_view(), "wang.fang", "supervisor", NOW)  # nobody works on it yet


@pytest.mark.parametrize("text,ok", [("", False), ("   ", False), (None, False), (5, False), ("好", True),
                                     ("x" * 10_000, True), ("x" * 10_001, False)])
def test_reply_length_limits(text, ok):
    if ok:
        assert tk.reply_text(assigned_view(), "li.na", "agent", text) == text
    else:
        with pytest.raises(tk.ActionRefused) as refused:
            tk.reply_text(assigned_view(), "li.na", "agent", text)
        assert refused.value.status == 400


def test_missing_view_is_worth_waiting_for_only_briefly():
    event = ev.parse_event("dispatcher", "ticket_assigned", ticket_assigned())
    assert tk.retry_or_give_up(event, event.occurred_at + timedelta(seconds=5))
    assert not tk.retry_or_give_up(event, event.occurred_at + timedelta(seconds=tk.OUT_OF_ORDER_GRACE_SECONDS + 1))


def test_console_json_hides_the_trace_id():
    body = assigned_view().for_console()
    assert "trace_id" not in body and body["customer"]["name"] == "张伟"


def test_console_json_never_carries_the_chat_visitors_credential():
    view = assigned_view()
    view = view.model_copy(update={"customer": view.customer.model_copy(update={"chat_visitor_id": "v-secret-0123456789"})})
    body = view.for_console()
    assert "chat_visitor_id" not in body["customer"] and "v-secret-0123456789" not in str(body)
