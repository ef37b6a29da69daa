"""A bounce on a ticket becomes a system note in its view: masked, one line, idempotent, no reopening."""
import pytest

from services.agent_desk import tickets
from services.agent_desk.tests.factories import mail_bounced, ticket_received
from shared import events as ev


def note(**kw):
    return tickets.bounce_note(ev.parse_event("intake_email", "mail_bounced", mail_bounced(**kw)))


@pytest.mark.parametrize("kw, text", [
    ({}, "Delivery to c***@example.com failed: 5.1.1 Recipient address rejected: User unknown (permanent)"),
    ({"hard": False, "status": "4.2.2", "reason": "452 4.2.2 Mailbox full"},
     "Delivery to c***@example.com failed: 4.2.2 Mailbox full (temporary)"),
    ({"status": "", "reason": "550 No such user here"}, "Delivery to c***@example.com failed: No such user here (permanent)"),
    ({"status": "", "reason": ""}, "Delivery to c***@example.com failed: no reason given (permanent)"),
    ({"recipients": ("a.b@x.example", "c@y.example"), "reason": "550 5.1.1 user unknown"},
     "Delivery to a***@x.example, c***@y.example failed: 5.1.1 user unknown (permanent)"),
])
def test_bounce_note_text(kw, text):
    assert note(**kw).text == text


def test_note_is_a_system_message_added_once_and_a_resolved_ticket_stays_resolved():
    view = tickets.view_from_received(ev.parse_event("intake_email", "ticket_received", ticket_received()))
    view = view.model_copy(update={"status": "resolved", "agent_id": "li.na"})
    bounced = note()
    after = tickets.with_message(tickets.with_message(view, bounced), bounced)
    assert [(m.author, m.message_id) for m in after.messages] == [("system", "bounce:bounce-1")]
    assert after.status == "resolved"
    assert after.for_console()["messages"][0]["author"] == "system"
    assert "cheng.li@" not in after.messages[0].text
