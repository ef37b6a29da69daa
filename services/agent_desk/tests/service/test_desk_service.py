"""agent_desk in-process on a free port, against a real RabbitMQ vhost and real Redis."""
from __future__ import annotations

import asyncio
from datetime import timedelta

import aio_pika
import aiohttp
import redis.exceptions
import structlog.testing

from services.agent_desk.service import DESK_KEY
from services.agent_desk.tests.factories import message_received, now, ticket_assigned, ticket_received
from shared.intake_ledger import stable_event_id
from shared.testing.asyncio_helpers import wait_until
from shared.testing.plugin import AsyncEventListener, dead_letters


async def next_frame(ws: aiohttp.ClientWebSocketResponse, frame_type: str, timeout: float = 10.0) -> dict:
    async def read() -> dict:
        while True:
            frame = await ws.receive_json()
            if frame["type"] == frame_type:
                return frame

    return await asyncio.wait_for(read(), timeout)


async def assigned_ticket(publish, ws, ticket_id: str = "TM-10001", agent_id: str = "li.na") -> dict:
    await publish("intake_email", "ticket_received", ticket_received(ticket_id))
    await publish("dispatcher", "ticket_assigned", ticket_assigned(ticket_id, agent_id))
    return (await next_frame(ws, "ticket_assigned"))["ticket"]


async def test_wrong_password_and_missing_session_get_401(base_url, desk):
    async with aiohttp.ClientSession(base_url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        wrong = await http.post("/api/login", json={"agent_id": "li.na", "password": "guess"})
        assert wrong.status == 401
        assert (await wrong.json())["error"]["code"] == "invalid_credentials"
        unknown = await http.post("/api/login", json={"agent_id": "nobody", "password": "guess"})
        assert unknown.status == 401
        malformed = await http.post("/api/login", data=b"{not json")
        assert malformed.status == 400
        for method, path in [("GET", "/api/me"), ("GET", "/api/tickets"), ("POST", "/api/tickets/TM-1/accept"),
                             ("POST", "/api/presence"), ("GET", "/ws")]:
            response = await http.request(method, path)
            assert response.status == 401, path
            assert (await response.json())["error"]["code"] == "not_signed_in"
        forged = await http.get("/api/me", cookies={"tm_desk_session": "eyJhIjoid2FuZy5mYW5nIn0.c2ln"})
        assert forged.status == 401


async def test_console_page_is_served_with_a_strict_policy(base_url, desk):
    async with aiohttp.ClientSession(base_url) as http:
        page = await http.get("/")
        assert page.status == 200 and "script-src 'self'" in page.headers["Content-Security-Policy"]
        assert 'id="login-form"' in await page.text()
        assert (await http.get("/static/app.js")).status == 200


async def test_assignment_is_pushed_and_actions_emit_events(signed_in, publish, amqp_uri):
    li_na = await signed_in("li.na")
    async with li_na.ws_connect("/ws") as ws, AsyncEventListener(amqp_uri, "agent_desk") as desk_events:
        assert (await next_frame(ws, "worklist"))["tickets"] == []
        ticket = await assigned_ticket(publish, ws)
        assert ticket["text"] == "你好，我上个月的发票抬头写错了，请帮忙重开。<b>谢谢</b>"
        assert ticket["customer"]["name"] == "张伟" and ticket["priority"] == "P2"
        assert ticket["decision"]["reason"] == "billing 5/5, zh, load 0/10"

        accepted = await li_na.post("/api/tickets/TM-10001/accept")
        assert accepted.status == 200 and (await accepted.json())["ticket"]["status"] == "accepted"
        again = await li_na.post("/api/tickets/TM-10001/accept")
        assert again.status == 200  # idempotent

        reply = await li_na.post("/api/tickets/TM-10001/reply", json={"text": "  您好，已为您重开发票。  ",
                                                                       "client_reply_id": "reply-draft-1"})
        assert reply.status == 201
        reply_id = (await reply.json())["reply_id"]
        _, replied = await desk_events.wait_for(lambda t, b: t == "agent_replied")
        assert replied["text"] == "您好，已为您重开发票。" and replied["reply_id"] == reply_id
        assert replied["channel"] == "email" and replied["customer"]["email"] == "zhang.wei@example.com"
        assert replied["trace_id"] == "trace-TM-10001" and replied["agent_id"] == "li.na"

        resolved = await li_na.post("/api/tickets/TM-10001/resolve")
        assert (await resolved.json())["ticket"]["status"] == "resolved"
        _, resolved_event = await desk_events.wait_for(lambda t, b: t == "ticket_resolved")
        assert resolved_event["agent_id"] == "li.na" and resolved_event["channel"] == "email"
        assert [t for t, _ in desk_events.events] == ["ticket_accepted", "agent_replied", "ticket_resolved"]
        assert (await li_na.post("/api/tickets/TM-10001/resolve")).status == 200
        assert (await (await li_na.get("/api/tickets")).json())["tickets"] == []  # resolved leaves the work list


async def test_other_agents_get_403_and_bad_replies_400(signed_in, publish):
    li_na, sam, supervisor = await signed_in("li.na"), await signed_in("sam.taylor"), await signed_in("wang.fang")
    async with li_na.ws_connect("/ws") as ws:
        await assigned_ticket(publish, ws)
    for path, body in [("/accept", None), ("/reply", {"text": "hi", "client_reply_id": "reply-draft-1"}),
                       ("/resolve", None)]:
        response = await sam.post(f"/api/tickets/TM-10001{path}", json=body)
        assert response.status == 403, path
        assert (await response.json())["error"]["code"] == "not_assignee"
    assert (await sam.get("/api/tickets/TM-10001")).status == 403
    assert (await sam.get("/api/tickets", params={"agent_id": "li.na"})).status == 403
    for body in ({"text": ""}, {"text": " \n "}, {"text": "长" * 10_001}, {"text": 42}, {}):
        response = await li_na.post("/api/tickets/TM-10001/reply", json={**body, "client_reply_id": "reply-draft-1"})
        assert response.status == 400, body
    assert (await li_na.post("/api/tickets/TM-99999/accept")).status == 404
    # A supervisor may look and act on anyone's ticket.
    worklist = await (await supervisor.get("/api/tickets", params={"agent_id": "li.na"})).json()
    assert [t["ticket_id"] for t in worklist["tickets"]] == ["TM-10001"]
    assert (await supervisor.post("/api/tickets/TM-10001/accept")).status == 200
    view = await (await li_na.get("/api/tickets/TM-10001")).json()
    assert view["ticket"]["status"] == "accepted" and view["ticket"]["messages"] == []


async def test_reconnecting_console_gets_its_work_list_and_customer_messages(signed_in, publish):
    li_na = await signed_in("li.na")
    async with li_na.ws_connect("/ws") as ws:
        await assigned_ticket(publish, ws)
    async with li_na.ws_connect("/ws") as ws:
        (ticket,) = (await next_frame(ws, "worklist"))["tickets"]
        assert ticket["ticket_id"] == "TM-10001" and ticket["status"] == "assigned"
        await publish("intake_email", "message_received", message_received())
        pushed = await next_frame(ws, "customer_message")
    assert pushed["ticket_id"] == "TM-10001" and pushed["text"] == "补充：税号是 123。"
    view = await wait_until(lambda: _messages(li_na), message="message stored in the view")
    assert view == ["补充：税号是 123。"]


async def _messages(http: aiohttp.ClientSession) -> list[str]:
    body = await (await http.get("/api/tickets/TM-10001")).json()
    return [m["text"] for m in body["ticket"]["messages"]]


async def test_assignment_overtaking_the_ticket_is_retried_until_the_view_exists(signed_in, publish):
    li_na = await signed_in("li.na")
    async with li_na.ws_connect("/ws") as ws:
        await next_frame(ws, "worklist")
        await publish("dispatcher", "ticket_assigned", ticket_assigned("TM-10002"))
        await publish("intake_chat", "ticket_received", ticket_received("TM-10002", channel="chat"))
        pushed = await next_frame(ws, "ticket_assigned", timeout=15)
    assert pushed["ticket"]["ticket_id"] == "TM-10002" and pushed["ticket"]["channel"] == "chat"
    tickets = await wait_until(lambda: _worklist_ids(li_na), timeout=15, message="assignment stored")
    assert tickets == ["TM-10002"]


async def _worklist_ids(http: aiohttp.ClientSession) -> list[str]:
    return [t["ticket_id"] for t in (await (await http.get("/api/tickets")).json())["tickets"]]


async def test_every_presence_choice_is_announced_even_a_repeated_one(signed_in, amqp_uri):
    """A repeated click re-announces: it is how an agent puts the desk and the dispatcher back
    in step after two tabs raced (the dispatcher keeps the newest change by time)."""
    li_na = await signed_in("li.na")
    async with AsyncEventListener(amqp_uri, "agent_desk", ["agent_presence_changed"]) as events:
        assert (await li_na.post("/api/presence", json={"presence": "busy"})).status == 400
        assert (await li_na.post("/api/presence", json={"presence": "online"})).status == 200
        assert (await li_na.post("/api/presence", json={"presence": "online"})).status == 200
        assert (await li_na.post("/api/presence", json={"presence": "away"})).status == 200
        await events.wait_for(lambda t, b: b["presence"] == "away")
    assert [(b["agent_id"], b["presence"]) for _, b in events.events] == [
        ("li.na", "online"), ("li.na", "online"), ("li.na", "away")]
    assert (await (await li_na.get("/api/me")).json())["presence"] == "away"


async def test_logout_ends_the_session_and_goes_offline(signed_in, base_url, amqp_uri):
    li_na = await signed_in("li.na")
    cookie = li_na.cookie_jar.filter_cookies(base_url)["tm_desk_session"].value
    await li_na.post("/api/presence", json={"presence": "online"})
    async with AsyncEventListener(amqp_uri, "agent_desk", ["agent_presence_changed"]) as events:
        assert (await li_na.post("/api/logout")).status == 200
        _, offline = await events.wait_for(lambda t, b: True)
    assert offline["presence"] == "offline"
    async with aiohttp.ClientSession(base_url) as stranger:  # the old cookie no longer works
        assert (await stranger.get("/api/me", cookies={"tm_desk_session": cookie})).status == 401


async def test_cross_site_requests_are_refused(signed_in):
    li_na = await signed_in("li.na")
    response = await li_na.post("/api/presence", json={"presence": "online"}, headers={"Origin": "https://evil.example"})
    assert response.status == 403


async def test_repeated_wrong_passwords_lock_the_login(base_url, desk):
    async with aiohttp.ClientSession(base_url) as http:
        statuses = [(await http.post("/api/login", json={"agent_id": "sam.taylor", "password": "nope"})).status
                    for _ in range(11)]
    assert statuses == [401] * 10 + [429]


async def test_assignment_for_a_ticket_that_never_came_is_dead_lettered(desk, publish, amqp_uri):
    long_ago = now() - timedelta(hours=1)
    await publish("dispatcher", "ticket_assigned", ticket_assigned("TM-404", at=long_ago))
    letters = await asyncio.to_thread(dead_letters, amqp_uri, 10.0, 1)
    assert len(letters) == 1
    headers, raw = letters[0]
    assert headers["x-tm-failed-queue"] == "evt-dispatcher-ticket_assigned--agent_desk.store_ticket_assigned"
    assert "TicketNotStored" in headers["x-tm-dead-reason"] and b"TM-404" in raw


async def refuse_desk_publishes(amqp_uri):
    """Swap the desk's exchange for an internal one: the broker refuses publishes to it."""
    async with await aio_pika.connect(amqp_uri) as admin:
        channel = await admin.channel()
        await channel.exchange_delete("agent_desk.events")
        await channel.declare_exchange("agent_desk.events", aio_pika.ExchangeType.TOPIC, durable=True, internal=True)


async def test_a_retried_reply_is_one_reply_with_one_event_id(signed_in, publish, amqp_uri):
    li_na = await signed_in("li.na")
    async with li_na.ws_connect("/ws") as ws, AsyncEventListener(amqp_uri, "agent_desk", ["agent_replied"]) as bus:
        await assigned_ticket(publish, ws)
        body = {"text": "已为您重开发票。", "client_reply_id": "draft-0001-abcd"}
        first = await li_na.post("/api/tickets/TM-10001/reply", json=body)
        retry = await li_na.post("/api/tickets/TM-10001/reply", json=body)  # the answer to the first was lost
        assert first.status == 201 and retry.status == 201
        first_body, retry_body = await first.json(), await retry.json()
        assert retry_body["reply_id"] == first_body["reply_id"]
        assert [m["text"] for m in retry_body["ticket"]["messages"]] == ["已为您重开发票。"]
        other = await li_na.post("/api/tickets/TM-10001/reply", json={"text": "还有别的问题吗？",
                                                                      "client_reply_id": "draft-0002-abcd"})
        assert other.status == 201
        await bus.wait_for(lambda t, b: b["text"] == "还有别的问题吗？")
    event_ids = {b["event_id"] for _, b in bus.events if b["text"] == "已为您重开发票。"}
    assert event_ids == {stable_event_id("agent_replied", "TM-10001", "draft-0001-abcd")}
    assert (await _messages(li_na)) == ["已为您重开发票。", "还有别的问题吗？"]


async def test_a_reply_published_but_not_recorded_is_recorded_once_on_retry(desk, signed_in, publish, amqp_uri):
    li_na = await signed_in("li.na")
    desk_app = desk.app[DESK_KEY]
    async with li_na.ws_connect("/ws") as ws, AsyncEventListener(amqp_uri, "agent_desk", ["agent_replied"]) as bus:
        await assigned_ticket(publish, ws)
        body = {"text": "您好", "client_reply_id": "draft-lost-0001"}
        real_change = desk_app.store.change_ticket

        async def redis_gone(*_args, **_kwargs):
            raise redis.exceptions.ConnectionError("redis went away")

        desk_app.store.change_ticket = redis_gone
        try:
            failed = await li_na.post("/api/tickets/TM-10001/reply", json=body)
        finally:
            desk_app.store.change_ticket = real_change
        assert failed.status == 503
        retry = await li_na.post("/api/tickets/TM-10001/reply", json=body)
        assert retry.status == 201
        await bus.wait_for(lambda t, b: len(bus.events) == 2)
    assert {b["event_id"] for _, b in bus.events} == {stable_event_id("agent_replied", "TM-10001", "draft-lost-0001")}
    assert len({b["reply_id"] for _, b in bus.events}) == 1
    assert (await _messages(li_na)) == ["您好"]


async def test_reply_needs_a_well_formed_client_reply_id(signed_in, publish):
    li_na = await signed_in("li.na")
    async with li_na.ws_connect("/ws") as ws:
        await assigned_ticket(publish, ws)
    for client_reply_id in (None, "", "short", "x" * 65, "has space in it", "中文中文中文中文中文", 12345678):
        body = {"text": "hi"} if client_reply_id is None else {"text": "hi", "client_reply_id": client_reply_id}
        response = await li_na.post("/api/tickets/TM-10001/reply", json=body)
        assert response.status == 400, client_reply_id
        assert (await response.json())["error"]["code"] == "invalid_client_reply_id"
    assert (await _messages(li_na)) == []


async def test_logout_works_while_the_broker_refuses_publishes(signed_in, base_url, amqp_uri):
    li_na = await signed_in("li.na")
    cookie = li_na.cookie_jar.filter_cookies(base_url)["tm_desk_session"].value
    assert (await li_na.post("/api/presence", json={"presence": "online"})).status == 200
    await refuse_desk_publishes(amqp_uri)
    with structlog.testing.capture_logs() as logs:
        response = await li_na.post("/api/logout")
    assert response.status == 200
    assert "tm_desk_session" not in li_na.cookie_jar.filter_cookies(base_url)
    assert any(e["event"] == "presence_publish_failed" and e["presence"] == "offline" for e in logs)
    async with aiohttp.ClientSession(base_url) as stranger:  # the session is over all the same
        assert (await stranger.get("/api/me", cookies={"tm_desk_session": cookie})).status == 401


async def test_a_customer_message_after_resolution_reopens_the_ticket_live(signed_in, publish, amqp_uri):
    li_na = await signed_in("li.na")
    async with li_na.ws_connect("/ws") as ws, AsyncEventListener(amqp_uri, "agent_desk", ["ticket_reopened"]) as bus:
        await assigned_ticket(publish, ws)
        assert (await li_na.post("/api/tickets/TM-10001/accept")).status == 200
        assert (await li_na.post("/api/tickets/TM-10001/resolve")).status == 200
        assert await _worklist_ids(li_na) == []
        late = message_received(text="还有一个问题：发票什么时候寄出？", message_id="chat-m-9", channel="chat")
        await publish("intake_chat", "message_received", late)
        pushed = await next_frame(ws, "ticket_reopened")
        assert pushed["ticket"]["ticket_id"] == "TM-10001" and pushed["ticket"]["status"] == "reopened"
        assert [m["text"] for m in pushed["ticket"]["messages"]] == ["还有一个问题：发票什么时候寄出？"]
        # The desk does not assign it itself: it tells the dispatcher, naming the last agent.
        _, reopened = await bus.wait_for(lambda t, b: True)
        assert (reopened["by"], reopened["agent_id"], reopened["channel"]) == ("customer", "li.na", "chat")
        assert reopened["event_id"] == stable_event_id("ticket_reopened", "TM-10001", "chat-m-9")
        assert await wait_until(lambda: _worklist_ids(li_na), message="reopened ticket back in the work list") \
            == ["TM-10001"]
        # Resolved again, then the same message redelivered: it stays resolved, the message once.
        assert (await li_na.post("/api/tickets/TM-10001/resolve")).status == 200
        await assigned_ticket(publish, ws, "TM-20002")
        await publish("intake_chat", "message_received", late)
        await publish("intake_chat", "message_received", message_received("TM-20002", message_id="m-sentinel",
                                                                          channel="chat"))
        frames = await frames_until(ws, lambda f: f.get("message_id") == "m-sentinel")
    assert not [f for f in frames if f.get("ticket", {}).get("ticket_id") == "TM-10001"]
    view = (await (await li_na.get("/api/tickets/TM-10001")).json())["ticket"]
    assert view["status"] == "resolved" and len(view["messages"]) == 1
    assert await _worklist_ids(li_na) == ["TM-20002"]


async def frames_until(ws: aiohttp.ClientWebSocketResponse, last, timeout: float = 10.0) -> list[dict]:
    async def read() -> list[dict]:
        frames = []
        while not frames or not last(frames[-1]):
            frames.append(await ws.receive_json())
        return frames

    return await asyncio.wait_for(read(), timeout)
