"""The status page and the chat in one intake_chat, on one chat ticket (real RabbitMQ and Redis):
the page's replies and the widget's messages are different messages of the ticket, neither
takes the other's ids, and the chat transcript's numbering is the chat's own."""
from shared import events as ev
from shared.testing.plugin import AsyncEventListener

from services.intake_chat.tests.conftest import VISITOR
from services.intake_chat.tests.customer_fixtures import pages_app  # noqa: F401 - a fixture


async def chat_post(app, cmid, text, **extra):
    body = {"session": VISITOR, "client_message_id": cmid, "text": text, **extra}
    async with app.http.post("/api/chat/messages", json=body) as resp:
        return resp.status, await resp.json()


async def test_status_page_replies_and_chat_messages_stay_apart_on_a_chat_ticket(pages_app, amqp_uri):
    status, opened = await chat_post(pages_app, "m-1", "Where is my parcel?", name="Ann Lee", email="ann@example.com",
                                     language="en")
    assert status == 202 and opened["seq"] == 1
    ticket = opened["ticket_id"]
    await pages_app.wait_view(ticket, lambda v: v["known"] and v["channel"] == "chat", "chat ticket on the page")
    async with AsyncEventListener(amqp_uri, ev.INTAKE_CHAT, [ev.MESSAGE_RECEIVED]) as bus:
        async with pages_app.http.post(f"{pages_app.status_path(ticket)}/reply",
                                       json={"client_message_id": "m-1", "text": "From the status page"}) as resp:
            assert resp.status == 202 and (await resp.json())["message_id"] == "sp-m-1"
        # A chat message may not take the page reply's id: it would be the same event, one of them dropped.
        status, refused = await chat_post(pages_app, "sp-m-1", "Hello again")
        assert status == 400 and refused["error"]["code"] == "invalid_client_message_id"
        status, second = await chat_post(pages_app, "m-2", "Hello again")
        assert status == 202 and second["ticket_id"] == ticket and second["seq"] == 2  # the page took no chat seq
        await bus.wait_for(lambda t, b: b["message_id"] == "m-2")
        ids = {b["message_id"]: b["event_id"] for _, b in bus.events}
        assert set(ids) == {"sp-m-1", "m-2"} and len(set(ids.values())) == 2
        assert all(b["channel"] == "chat" and b["ticket_id"] == ticket for _, b in bus.events)
    view = await pages_app.wait_view(ticket, lambda v: len(v["messages"]) == 3, "three customer messages")
    assert [m["text"] for m in view["messages"]] == ["Where is my parcel?", "From the status page", "Hello again"]
