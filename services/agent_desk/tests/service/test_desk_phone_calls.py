"""What intake_phone's tickets look like in the desk: a call resolved on first contact, and a
caller's further missed calls folded into their callback ticket."""
from __future__ import annotations

from shared import events as ev
from shared.testing.asyncio_helpers import wait_until

from services.agent_desk.tests.factories import now, ticket_assigned

CALLER = {"name": "", "phone": "+8613812345678"}


def phone_ticket(ticket_id: str, **source: str) -> dict:
    return ev.make_event(ev.INTAKE_PHONE, ev.TICKET_RECEIVED, now=now(), trace_id="trace-" + ticket_id,
                         ticket_id=ticket_id, channel="phone", customer=CALLER, subject="来电记录 / Call",
                         text="客户询问发票抬头，已告知。", received_at=now(),
                         source={"call_id": "c-" + ticket_id, "category": "call", "callback": "false", **source})


async def view(session, ticket_id: str) -> dict | None:
    response = await session.get(f"/api/tickets/{ticket_id}")
    return (await response.json())["ticket"] if response.status == 200 else None


async def test_a_call_resolved_on_first_contact_is_stored_resolved_and_in_nobodys_work_list(signed_in, publish):
    supervisor = await signed_in("wang.fang")
    await publish(ev.INTAKE_PHONE, ev.TICKET_RECEIVED,
                  phone_ticket("TM-30001", resolved_on_first_contact="true", agent_id="li.na"))
    stored = await wait_until(lambda: view(supervisor, "TM-30001"), message="the phone ticket's view")
    assert stored["status"] == "resolved" and stored["last_agent_id"] == "li.na"
    assert stored["resolved_at"] == stored["received_at"]
    li_na = await signed_in("li.na")
    assert (await (await li_na.get("/api/tickets")).json())["tickets"] == []
    # left open by its wrap-up code: a new ticket like any other
    await publish(ev.INTAKE_PHONE, ev.TICKET_RECEIVED, phone_ticket("TM-30002", resolved_on_first_contact="false"))
    assert (await wait_until(lambda: view(supervisor, "TM-30002"), message="open call"))["status"] == "new"


async def test_a_further_missed_call_from_intake_phone_joins_the_callback_ticket(signed_in, publish):
    li_na = await signed_in("li.na")
    await publish(ev.INTAKE_PHONE, ev.TICKET_RECEIVED, phone_ticket("TM-30003", category="callback", callback="true"))
    await publish(ev.DISPATCHER, ev.TICKET_ASSIGNED, ticket_assigned("TM-30003", "li.na"))
    again = ev.make_event(ev.INTAKE_PHONE, ev.MESSAGE_RECEIVED, now=now(), trace_id="trace-TM-30003",
                          ticket_id="TM-30003", channel="phone", customer=CALLER, message_id="call-abc",
                          text="再次未接来电：+86 138 1234 5678", received_at=now(),
                          source={"call_id": "c-2", "folded": "true", "category": "callback"})
    await publish(ev.INTAKE_PHONE, ev.MESSAGE_RECEIVED, again)

    async def with_message():
        stored = await view(li_na, "TM-30003")
        return stored if stored and stored["messages"] else None

    stored = await wait_until(with_message, message="the folded call on the ticket")
    assert [(m["author"], m["channel"], m["text"]) for m in stored["messages"]] == [
        ("customer", "phone", "再次未接来电：+86 138 1234 5678")]
