"""Review finding (issue 6): a phone call resolved on first contact is a resolved ticket in the reports."""
from __future__ import annotations

from datetime import datetime, timezone

from services.agent_desk import history, reports
from shared import events as ev

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def _facts(entry: history.Entry) -> dict[str, str]:
    """What history_store's script keeps for a ticket with this one event (ops on an empty hash)."""
    facts = {"ticket_id": entry.ticket_id}
    for update in entry.updates:
        facts[update.field] = update.value
    return facts


def test_a_call_resolved_on_first_contact_is_not_open_in_the_report():
    body = ev.make_event(ev.INTAKE_PHONE, ev.TICKET_RECEIVED, now=T0, trace_id="trace-1", ticket_id="TM-30001",
                         channel="phone", customer={"name": "张伟", "phone": "+8613812345678"},
                         subject="来电记录 / Call", text="已告知。", received_at=T0.isoformat(),
                         source={"call_id": "c-1", "resolved_on_first_contact": "true", "agent_id": "li.na"})
    event = ev.parse_event(ev.INTAKE_PHONE, ev.TICKET_RECEIVED, body)
    facts = reports.facts_from_hash(_facts(history.entry_of(ev.INTAKE_PHONE, ev.TICKET_RECEIVED, event)))
    assert facts.resolved, "counted open: in totals.open and backlog_by_skill until the facts expire"
