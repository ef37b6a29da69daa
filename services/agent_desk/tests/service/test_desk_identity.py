"""One customer across channels at the desk: ticket_attached on a real RabbitMQ and Redis, and the
supervisors' customer API."""
from __future__ import annotations

import aiohttp

from services.agent_desk.tests.factories import now, ticket_assigned, ticket_received
from services.agent_desk.tests.service.test_desk_service import next_frame
from shared import events as ev
from shared.customer_identity import ContactIdentifiers, Identifier
from shared.customer_store import CustomerStore
from shared.testing.asyncio_helpers import wait_until
from shared.testing.plugin import AsyncEventListener

CHAT_CUSTOMER = {"name": "张伟", "email": "zhang.wei@example.com", "chat_visitor_id": "v-1",
                 "verified": ["chat_visitor"]}


def contact_received(ticket_id: str, channel: str, customer: dict, text: str) -> dict:
    return ev.make_event(f"intake_{channel}", ev.TICKET_RECEIVED, now=now(), trace_id="trace-" + ticket_id,
                         ticket_id=ticket_id, channel=channel, customer=customer, subject=text[:20], text=text,
                         received_at=now().isoformat())


def attached(ticket_id: str, into: str, channel: str, customer: dict, text: str, mode: str = "attach") -> dict:
    return ev.make_event(ev.DISPATCHER, ev.TICKET_ATTACHED, now=now(), trace_id="trace-" + ticket_id,
                         event_id=f"attached-{ticket_id}", ticket_id=ticket_id, into_ticket_id=into, channel=channel,
                         customer=customer, customer_id="CU-1", subject=text[:20], text=text,
                         received_at=now().isoformat(), mode=mode)


def classified(ticket_id: str, customer_id: str, channel: str = "email") -> dict:
    return ev.make_event(ev.DISPATCHER, ev.TICKET_CLASSIFIED, now=now(), trace_id="trace-" + ticket_id,
                         ticket_id=ticket_id, channel=channel, priority="P3", required_skills=["billing"],
                         language="zh", received_at=now().isoformat(), customer_id=customer_id,
                         history={"open_tickets": ["TM-10001"], "recent_tickets": 1, "recent_complaints": 0,
                                  "last_agent_id": "li.na"})


async def view(http: aiohttp.ClientSession, ticket_id: str) -> dict:
    return await (await http.get(f"/api/tickets/{ticket_id}")).json()


async def test_an_attached_contact_is_a_message_on_the_open_ticket_pushed_to_its_holder(signed_in, publish):
    li_na, supervisor = await signed_in("li.na"), await signed_in("wang.fang")
    async with li_na.ws_connect("/ws") as ws:
        await next_frame(ws, "worklist")
        await publish("intake_email", "ticket_received", ticket_received("TM-10001"))
        await publish("dispatcher", "ticket_assigned", ticket_assigned("TM-10001", "li.na"))
        await next_frame(ws, "ticket_assigned")
        await publish("intake_chat", "ticket_received", contact_received("TM-10002", "chat", CHAT_CUSTOMER, "在吗？发票呢"))
        await publish("dispatcher", "ticket_attached", attached("TM-10002", "TM-10001", "chat", CHAT_CUSTOMER,
                                                               "在吗？发票呢"))
        pushed = (await next_frame(ws, "ticket_updated"))["ticket"]
        assert pushed["ticket_id"] == "TM-10001" and pushed["status"] == "assigned"
        assert [(m["author"], m["channel"], m["text"]) for m in pushed["messages"]] == [
            ("system", None, "Continued from chat (TM-10002)"), ("customer", "chat", "在吗？发票呢")]

        # The chat goes on: its next message belongs to the open ticket too.
        follow_up = ev.make_event("intake_chat", ev.MESSAGE_RECEIVED, now=now(), trace_id="trace-TM-10002",
                                  ticket_id="TM-10002", channel="chat", customer=CHAT_CUSTOMER, text="还有税号 123",
                                  message_id="m-2", received_at=now().isoformat())
        await wait_until(lambda: _attached_to(supervisor, "TM-10002"), message="contact marked attached")
        await publish("intake_chat", "message_received", follow_up)
        frame = await next_frame(ws, "customer_message")
        assert (frame["ticket_id"], frame["channel"], frame["text"]) == ("TM-10001", "chat", "还有税号 123")

    # A redelivered ticket_attached adds nothing; the contact is in no work list and in no history.
    await publish("dispatcher", "ticket_attached", attached("TM-10002", "TM-10001", "chat", CHAT_CUSTOMER,
                                                           "在吗？发票呢"))
    await publish("intake_email", "ticket_received", ticket_received("TM-10003"))  # a marker, same customer
    await wait_until(lambda: _exists(supervisor, "TM-10003"), message="marker stored")
    body = await wait_until(lambda: _with_messages(li_na, "TM-10001", 3), message="follow-up stored")
    assert [m["text"] for m in body["ticket"]["messages"]] == [
        "Continued from chat (TM-10002)", "在吗？发票呢", "还有税号 123"]
    assert [h["ticket_id"] for h in body["history"]] == ["TM-10003"]
    assert [t["ticket_id"] for t in (await (await li_na.get("/api/tickets")).json())["tickets"]] == ["TM-10001"]


async def _attached_to(http: aiohttp.ClientSession, ticket_id: str) -> bool:
    response = await http.get(f"/api/tickets/{ticket_id}")
    return response.status == 200 and (await response.json())["ticket"]["attached_to"] is not None


async def _exists(http: aiohttp.ClientSession, ticket_id: str) -> bool:
    return (await http.get(f"/api/tickets/{ticket_id}")).status == 200


async def _with_messages(http: aiohttp.ClientSession, ticket_id: str, count: int) -> dict | None:
    body = await view(http, ticket_id)
    return body if len(body["ticket"]["messages"]) >= count else None


async def test_a_contact_on_a_resolved_ticket_reopens_it_and_a_link_notes_both(signed_in, publish, amqp_uri):
    li_na = await signed_in("li.na")
    async with li_na.ws_connect("/ws") as ws, AsyncEventListener(amqp_uri, "agent_desk") as desk_events:
        await next_frame(ws, "worklist")
        await publish("intake_email", "ticket_received", ticket_received("TM-10001"))
        await publish("dispatcher", "ticket_assigned", ticket_assigned("TM-10001", "li.na"))
        await next_frame(ws, "ticket_assigned")
        assert (await li_na.post("/api/tickets/TM-10001/resolve")).status == 200
        call = {"name": "", "phone": "+8613812345678", "verified": ["phone"]}
        await publish("intake_phone", "ticket_received", contact_received("TM-10002", "phone", call, "Missed call"))
        await publish("dispatcher", "ticket_attached", attached("TM-10002", "TM-10001", "phone", call, "Missed call"))
        back = (await next_frame(ws, "ticket_reopened"))["ticket"]
        assert back["status"] == "reopened" and back["messages"][-1]["channel"] == "phone"
        _, reopened = await desk_events.wait_for(lambda t, b: t == "ticket_reopened")
        assert (reopened["ticket_id"], reopened["by"], reopened["agent_id"]) == ("TM-10001", "customer", "li.na")

        await publish("intake_chat", "ticket_received", contact_received("TM-10003", "chat", CHAT_CUSTOMER, "hi"))
        await publish("dispatcher", "ticket_attached", attached("TM-10003", "TM-10001", "chat", CHAT_CUSTOMER, "hi",
                                                               mode="link"))
        linked = (await next_frame(ws, "ticket_updated"))["ticket"]
        assert linked["linked_tickets"] == ["TM-10003"]
        assert linked["messages"][-1]["text"] == "The customer also contacted us by chat: TM-10003"
    supervisor = await signed_in("wang.fang")
    other = await wait_until(lambda: _linked(supervisor, "TM-10003"), message="link noted on the contact")
    assert other["attached_to"] is None and other["messages"][-1]["text"] == (
        "Linked to the customer's open ticket TM-10001")


async def _linked(http: aiohttp.ClientSession, ticket_id: str) -> dict | None:
    body = await view(http, ticket_id)
    return body["ticket"] if body["ticket"]["linked_tickets"] else None


async def test_the_history_panel_follows_the_profile_across_channels(signed_in, publish):
    li_na, supervisor = await signed_in("li.na"), await signed_in("wang.fang")
    await publish("intake_email", "ticket_received", ticket_received("TM-10001"))
    await publish("dispatcher", "ticket_classified", classified("TM-10001", "CU-1"))
    call = {"name": "", "phone": "+8613812345678", "verified": ["phone"]}
    await publish("intake_phone", "ticket_received", contact_received("TM-10002", "phone", call, "Missed call"))
    await publish("dispatcher", "ticket_classified", classified("TM-10002", "CU-1", "phone"))
    body = await wait_until(lambda: _history(supervisor, "TM-10001"), message="profile history")
    assert [h["ticket_id"] for h in body["history"]] == ["TM-10002"]
    assert body["ticket"]["customer_id"] == "CU-1" and body["ticket"]["customer_summary"]["last_agent_id"] == "li.na"
    assert (await li_na.get("/api/tickets/TM-10001")).status == 403


async def _history(http: aiohttp.ClientSession, ticket_id: str) -> dict | None:
    body = await view(http, ticket_id)
    return body if body["history"] else None


async def test_supervisors_look_up_edit_merge_and_dismiss_customers(signed_in, redis_client, desk):
    store = CustomerStore(redis_client)
    email, phone, visitor = (Identifier("email", "zhang.wei@example.com"), Identifier("phone", "+8613812345678"),
                             Identifier("chat_visitor", "v-1"))
    store.resolve(ContactIdentifiers(verified=(email,)), now=1.0, name="张伟")                   # CU-1
    store.resolve(ContactIdentifiers(verified=(visitor,), typed=(email,)), now=2.0)             # CU-2, maybe CU-1
    store.resolve(ContactIdentifiers(verified=(phone,), typed=(email,)), now=3.0)               # CU-3, maybe CU-1
    li_na, supervisor = await signed_in("li.na"), await signed_in("wang.fang")

    assert (await li_na.get("/api/v1/customers/CU-1")).status == 403
    found = await supervisor.get("/api/v1/customers", params={"identifier": "Zhang.Wei@example.com"})
    body = await found.json()
    assert found.status == 200 and body["customer"]["customer_id"] == "CU-1"
    assert {m["other"] for m in body["customer"]["maybe"]} == {"CU-2", "CU-3"}
    missing = await supervisor.get("/api/v1/customers", params={"identifier": "138 0000 0000"})
    assert missing.status == 404
    assert (await supervisor.get("/api/v1/customers", params={"identifier": "what?"})).status == 400

    updated = await supervisor.put("/api/v1/customers/CU-1", json={"tier": " VIP ", "language": "zh-CN"})
    assert updated.status == 200
    assert {k: (await updated.json())["customer"][k] for k in ("tier", "language", "name")} == {
        "tier": "vip", "language": "zh-cn", "name": "张伟"}
    for bad in ({"tier": "v i p"}, {"colour": "red"}, {}, {"name": 5}):
        response = await supervisor.put("/api/v1/customers/CU-1", json=bad)
        assert response.status == 400, bad
    assert (await supervisor.put("/api/v1/customers/CU-404", json={"tier": "vip"})).status == 404

    merged = await supervisor.post("/api/v1/customers/CU-2/merge", json={"other": "CU-1"})
    body = await merged.json()
    assert merged.status == 200 and body["merged"] == "CU-2" and body["customer"]["customer_id"] == "CU-1"
    assert body["customer"]["aliases"] == ["CU-2"] and body["customer"]["tier"] == "vip"
    assert (await (await supervisor.get("/api/v1/customers/CU-2")).json())["customer"]["customer_id"] == "CU-1"
    assert store.owner(visitor) == "CU-1"

    dismissed = await supervisor.delete("/api/v1/customers/CU-1/maybe/CU-3")
    assert dismissed.status == 200
    assert (await supervisor.delete("/api/v1/customers/CU-1/maybe/CU-3")).status == 404
    assert (await (await supervisor.get("/api/v1/customers/CU-1")).json())["customer"]["maybe"] == []
    refused = await supervisor.post("/api/v1/customers/CU-1/merge", json={"other": "CU-2"})
    assert refused.status == 409  # already one profile
    cross_site = await supervisor.put("/api/v1/customers/CU-1", json={"tier": "gold"},
                                      headers={"Origin": "http://evil.example"})
    assert cross_site.status == 403
