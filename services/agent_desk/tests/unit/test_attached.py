"""A contact from another channel on the customer's open ticket (pure view changes)."""
from services.agent_desk import tickets as tk
from services.agent_desk.tests.factories import now, ticket_assigned, ticket_received
from shared import events as ev


def open_ticket() -> tk.TicketView:
    view = tk.view_from_received(ev.TicketReceived.model_validate(ticket_received("TM-1")))
    return tk.with_assignment(view, ev.TicketAssigned.model_validate(ticket_assigned("TM-1")))


def attached(channel: str = "email", mode: str = "attach", subject: str = "发票", text: str = "还没收到") -> ev.TicketAttached:
    return ev.TicketAttached.model_validate(ev.make_event(
        ev.DISPATCHER, ev.TICKET_ATTACHED, now=now(), trace_id="trace-TM-2", ticket_id="TM-2", into_ticket_id="TM-1",
        channel=channel, customer={"email": "zhang.wei@example.com"}, subject=subject, text=text,
        received_at=now().isoformat(), mode=mode))


def test_an_attached_mail_is_a_customer_message_with_its_subject_and_a_note_once():
    event = attached()
    view = tk.with_attached(open_ticket(), event)
    assert [(m.author, m.channel, m.text) for m in view.messages] == [
        ("system", None, "Continued from email (TM-2)"), ("customer", "email", "发票\n\n还没收到")]
    assert tk.with_attached(view, event) == view  # redelivered: nothing twice
    assert view.status == "assigned" and view.agent_id == "li.na"


def test_attached_to_a_resolved_ticket_it_reopens_it_for_its_last_agent():
    resolved = open_ticket().model_copy(update={"status": "resolved"})
    view = tk.with_attached(resolved, attached("phone", subject="未接来电", text="Missed call"))
    assert view.status == "reopened" and view.reopened_by_message == "attached:TM-2"
    assert view.messages[-1].text == "Missed call"  # only a mail's subject is worth adding


def test_the_contact_is_marked_attached_or_linked():
    contact = tk.view_from_received(ev.TicketReceived.model_validate(ticket_received("TM-2", channel="chat")))
    assert tk.as_attached(contact, attached("chat")).attached_to == "TM-1"
    linked = tk.as_attached(contact, attached("chat", mode="link"))
    assert linked.attached_to is None and linked.linked_tickets == ["TM-1"]
    assert tk.as_attached(linked, attached("chat", mode="link")) == linked
    into = tk.with_attached(open_ticket(), attached("chat", mode="link"))
    assert into.linked_tickets == ["TM-2"] and into.messages[-1].author == "system"


def test_history_records_the_attach_and_reports_leave_the_contact_out():
    from datetime import timedelta

    from services.agent_desk import history, reports

    folded = attached("phone")
    entry = history.entry_of(ev.DISPATCHER, ev.TICKET_ATTACHED, folded)
    updates = {(u.op, u.field): u.value for u in entry.updates}
    assert updates[("last", "attached_to")] == "TM-1" and updates[("last", "resolution")] == "merged"
    assert ("max", "resolved_at") in updates  # out of the backlog
    assert not any(u.field == "attached_to" for u in history.entry_of(
        ev.DISPATCHER, ev.TICKET_ATTACHED, attached("chat", mode="link")).updates)
    at = folded.received_at.timestamp()
    own = {"ticket_id": "TM-1", "received_at": repr(at), "channel": "email"}
    contact = {"ticket_id": "TM-2", "received_at": repr(at), "channel": "phone", "attached_to": "TM-1",
               "resolved_at": repr(at)}
    day = folded.received_at.replace(hour=0, minute=0, second=0, microsecond=0)
    figures = reports.report([own, contact], [own, contact], start=day, end=day + timedelta(days=1), by="channel",
                             tz=folded.received_at.tzinfo, now=folded.received_at)
    assert figures["totals"]["tickets"] == 1 and [r["key"] for r in figures["rows"]] == ["email"]
