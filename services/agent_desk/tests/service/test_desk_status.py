"""An agent sets a ticket's working status; the desk announces it with the status's SLA pause
flag. agent_desk in-process against a real RabbitMQ vhost and real Redis."""
from __future__ import annotations

import asyncio

import aiohttp

from services.agent_desk.tests.factories import PASSWORDS, message_received, now, ticket_assigned, ticket_received
from shared import events as ev
from shared.intake_ledger import stable_event_id
from shared.testing.asyncio_helpers import wait_until
from shared.testing.plugin import AsyncEventListener


async def next_frame(ws: aiohttp.ClientWebSocketResponse, frame_type: str, timeout: float = 10.0) -> dict:
    async def read() -> dict:
        while True:
            frame = await ws.receive_json()
            if frame["type"] == frame_type:
                return frame

    return await asyncio.wait_for(read(), timeout)


async def held_ticket(li_na, publish, ticket_id="TM-10001"):
    async with li_na.ws_connect("/ws") as ws:
        await publish("intake_email", "ticket_received", ticket_received(ticket_id))
        await publish("dispatcher", "ticket_assigned", ticket_assigned(ticket_id, "li.na"))
        await next_frame(ws, "ticket_assigned")
    assert (await li_na.post(f"/api/tickets/{ticket_id}/accept")).status == 200


async def view(http, ticket_id="TM-10001") -> dict:
    return (await (await http.get(f"/api/tickets/{ticket_id}")).json())["ticket"]


async def test_setting_a_status_announces_its_pause_flag_once(signed_in, publish, amqp_uri):
    li_na, sam = await signed_in("li.na"), await signed_in("sam.taylor")
    me = await (await li_na.get("/api/me")).json()
    assert [(s["status"], s["pauses_sla"]) for s in me["statuses"]] == [
        ("open", False), ("waiting_on_customer", True), ("on_hold", False)]
    await held_ticket(li_na, publish)
    async with AsyncEventListener(amqp_uri, "agent_desk", [ev.TICKET_STATUS_CHANGED]) as bus:
        waiting = await li_na.post("/api/tickets/TM-10001/status", json={"status": "waiting_on_customer"})
        assert waiting.status == 200 and (await waiting.json())["ticket"]["work_status"] == "waiting_on_customer"
        again = await li_na.post("/api/tickets/TM-10001/status", json={"status": "waiting_on_customer"})
        assert again.status == 200   # the same status again: nothing new
        held = await li_na.post("/api/tickets/TM-10001/status", json={"status": "on_hold"})
        assert (await held.json())["ticket"]["work_status"] == "on_hold"
        await bus.wait_for(lambda t, b: b["status"] == "on_hold")
        assert [(b["status"], b["paused"], b["previous"], b["agent_id"]) for _, b in bus.events] == [
            ("waiting_on_customer", True, "open", "li.na"), ("on_hold", False, "waiting_on_customer", "li.na")]
        assert bus.events[0][1]["event_id"] == stable_event_id(ev.TICKET_STATUS_CHANGED, "TM-10001", "1",
                                                                 "waiting_on_customer")
        assert bus.events[0][1]["trace_id"] == "trace-TM-10001"

    # Only the assignee or a supervisor; only the three statuses; only an open ticket.
    assert (await sam.post("/api/tickets/TM-10001/status", json={"status": "open"})).status == 403
    bad = await li_na.post("/api/tickets/TM-10001/status", json={"status": "snoozed"})
    assert bad.status == 400 and (await bad.json())["error"]["code"] == "invalid_status"
    assert (await li_na.post("/api/tickets/TM-10001/resolve")).status == 200
    closed = await li_na.post("/api/tickets/TM-10001/status", json={"status": "open"})
    assert closed.status == 409 and (await closed.json())["error"]["code"] == "ticket_resolved"


async def test_the_customer_answering_sets_the_ticket_open_again(signed_in, publish):
    li_na = await signed_in("li.na")
    await held_ticket(li_na, publish)
    assert (await li_na.post("/api/tickets/TM-10001/status", json={"status": "waiting_on_customer"})).status == 200
    await publish("intake_email", "message_received", message_received(message_id="m-answer"))
    assert await wait_until(lambda: _work_status(li_na), message="back to open") == "open"


async def _work_status(http) -> str | None:
    ticket = await view(http)
    return ticket["work_status"] if ticket["messages"] else None


async def test_which_statuses_pause_is_configuration(start_desk, amqp_uri, publish):
    desk = await start_desk("desk-hold-pauses", TM_PAUSING_STATUSES="waiting_on_customer,on_hold")
    async with aiohttp.ClientSession(f"http://127.0.0.1:{desk.port}", cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        assert (await http.post("/api/login", json={"agent_id": "li.na", "password": PASSWORDS["li.na"]})).status == 200
        await held_ticket(http, publish)
        async with AsyncEventListener(amqp_uri, "agent_desk", [ev.TICKET_STATUS_CHANGED]) as bus:
            assert (await http.post("/api/tickets/TM-10001/status", json={"status": "on_hold"})).status == 200
            _, changed = await bus.wait_for(lambda t, b: True)
    assert (changed["status"], changed["paused"]) == ("on_hold", True)


async def test_an_escalation_that_raises_the_priority_shows_on_the_ticket(signed_in, publish):
    li_na = await signed_in("li.na")
    await held_ticket(li_na, publish)
    raised = ev.make_event(ev.SLA_WATCHER, ev.TICKET_ESCALATED, now=now(), trace_id="trace-TM-10001",
                           ticket_id="TM-10001", clock="first_response", policy="P2", level=2,
                           reason="first_response target of 1h missed, 30min since the breach",
                           action="raise_priority", to_priority="P1", agent_id="li.na")
    await publish("sla_watcher", "ticket_escalated", raised)

    async def raised_view():
        ticket = await view(li_na)
        return ticket if ticket["priority"] == "P1" else None

    ticket = await wait_until(raised_view, message="priority raised")
    assert ticket["messages"][-1]["text"].startswith("Priority raised to P1 (level 2, first_response clock, breach)")
