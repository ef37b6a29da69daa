"""A bounce of our mail shows on its ticket in the console, live (real RabbitMQ vhost and Redis)."""
from __future__ import annotations

from services.agent_desk.tests.factories import mail_bounced, ticket_received
from shared.testing.asyncio_helpers import wait_until

from .test_desk_service import assigned_ticket, next_frame

NOTE = "Delivery to c***@example.com failed: 5.1.1 Recipient address rejected: User unknown (permanent)"


async def test_a_bounce_is_pushed_to_the_assignee_as_a_system_note_on_the_ticket(signed_in, publish):
    li_na = await signed_in("li.na")
    async with li_na.ws_connect("/ws") as ws:
        await next_frame(ws, "worklist")
        await assigned_ticket(publish, ws)
        await publish("intake_email", "mail_bounced", mail_bounced("TM-10001"))
        pushed = (await next_frame(ws, "ticket_updated"))["ticket"]
        assert pushed["ticket_id"] == "TM-10001" and pushed["status"] == "assigned"
        assert [(m["author"], m["text"]) for m in pushed["messages"]] == [("system", NOTE)]

        await publish("intake_email", "mail_bounced", mail_bounced("TM-10001"))  # redelivered: still one note
        await publish("intake_email", "mail_bounced", mail_bounced(None, event_id="bounce-x"))  # no ticket: nothing
        await publish("intake_email", "mail_bounced", mail_bounced("TM-55555", event_id="bounce-y"))  # unknown ticket
        await publish("intake_email", "mail_bounced", mail_bounced("TM-10001", event_id="bounce-2", hard=False,
                                                                   status="4.2.2", reason="452 4.2.2 Mailbox full"))

        async def notes():
            view = await (await li_na.get("/api/tickets/TM-10001")).json()
            texts = [m["text"] for m in view["ticket"]["messages"]]
            return texts if len(texts) == 2 else None

        stored = await wait_until(notes, message="second note stored")
    assert stored == [NOTE, "Delivery to c***@example.com failed: 4.2.2 Mailbox full (temporary)"]
    assert (await li_na.get("/api/tickets/TM-55555")).status == 404


async def test_a_bounce_on_a_ticket_nobody_watches_is_stored_for_later(signed_in, publish):
    await publish("intake_email", "ticket_received", ticket_received("TM-10002"))
    supervisor = await signed_in("wang.fang")

    async def stored():
        response = await supervisor.get("/api/tickets/TM-10002")
        return response.status == 200 or None

    await wait_until(stored, message="ticket view stored")
    await publish("intake_email", "mail_bounced", mail_bounced("TM-10002"))

    async def noted():
        view = await (await supervisor.get("/api/tickets/TM-10002")).json()
        return view["ticket"]["messages"] or None

    messages = await wait_until(noted, message="note stored")
    assert [(m["author"], m["message_id"]) for m in messages] == [("system", "bounce:bounce-1")]
