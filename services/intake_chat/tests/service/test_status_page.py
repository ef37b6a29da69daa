"""The ticket status page against real RabbitMQ and Redis: links, lookup, projection, replies, live stream."""
import asyncio
import re
from datetime import timedelta

from shared import events as ev
from shared.intake_ledger import stable_event_id
from shared.testing.asyncio_helpers import wait_until
from shared.testing.plugin import AsyncEventListener

from services.intake_chat.tests.customer_fixtures import (  # noqa: F401 - pages_app is a fixture
    PagesApp, expired_token, now, pages_app, read_sse_view)

TICKET = "TM-10001"


def forged(token):
    """The same token with its signature's first character changed."""
    head, sig = token.rsplit(".", 1)
    return f"{head}.{'A' if sig[0] != 'A' else 'B'}{sig[1:]}"


async def get(app, path, **kwargs):
    async with app.http.get(path, allow_redirects=False, **kwargs) as resp:
        return resp.status, await resp.text(), resp.headers


async def post(app, path, *, json=None, data=None, headers=None):
    async with app.http.post(path, json=json, data=data, headers=headers, allow_redirects=False) as resp:
        return resp.status, await resp.text(), resp.headers


async def test_the_page_shows_the_ticket_from_its_events_escaped_and_in_the_customers_language(pages_app):
    await pages_app.stored_ticket(TICKET, subject="Parcel <script>alert(1)</script>")
    await pages_app.accepted(TICKET)
    due = now() + timedelta(minutes=50)
    await pages_app.clock(TICKET, "first_response", "activated", due)
    await pages_app.agent_replied(TICKET, "We are <b>checking</b>.")
    view = await pages_app.wait_view(TICKET, lambda v: len(v["messages"]) == 2 and v["expected_response_at"])
    assert view["status"] == "assigned" and view["status_label"] == "In progress"
    assert [(m["author"], m["text"]) for m in view["messages"]] == [("You", "Where is my parcel?"),
                                                                    ("李娜", "We are <b>checking</b>.")]
    assert view["expected_response_at"] == due.isoformat()

    status, html, headers = await get(pages_app, pages_app.status_path(TICKET), headers={"Accept-Language": "en"})
    assert status == 200 and "<title>Ticket status TM-10001</title>" in html
    assert "Parcel &lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html
    assert "We are &lt;b&gt;checking&lt;/b&gt;." in html and "Expected reply by" in html
    assert headers["Referrer-Policy"] == "no-referrer" and headers["Cache-Control"] == "no-store"
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    status, html, _ = await get(pages_app, pages_app.status_path(TICKET) + "?lang=zh")
    assert status == 200 and 'lang="zh-CN"' in html and "处理中" in html and "李娜" in html


async def test_the_projection_counts_a_redelivered_event_once(pages_app):
    await pages_app.stored_ticket(TICKET)
    body = await pages_app.agent_replied(TICKET, "First answer", reply_id="r-1")
    await pages_app._publish(ev.AGENT_DESK, ev.AGENT_REPLIED, body)  # the broker delivers it again
    await pages_app.agent_replied(TICKET, "sentinel", reply_id="r-2")
    view = await pages_app.wait_view(TICKET, lambda v: v["messages"][-1]["text"] == "sentinel")
    assert [m["text"] for m in view["messages"]] == ["Where is my parcel?", "First answer", "sentinel"]


async def test_forged_expired_malformed_and_wrong_purpose_links_reach_nothing(pages_app, redis_client):
    await pages_app.stored_ticket(TICKET)
    good = pages_app.token(TICKET)
    refused = {
        "forged": (forged(good), 404),
        "other secret": (PagesApp.token(TICKET, secret="another-secret-of-enough-length"), 404),
        "survey link": (pages_app.token(TICKET, "csat"), 404),
        "expired": (expired_token(TICKET), 410),
        "malformed": ("TM-10001.status", 404),
    }
    for name, (token, code) in refused.items():
        status, html, _ = await get(pages_app, f"/status/{token}")
        assert status == code and "Where is my parcel" not in html and "TM-10001" not in html, name
        for suffix in ("/view", "/events"):
            status, body, _ = await get(pages_app, f"/status/{token}{suffix}")
            assert status == code and '"error"' in body and "parcel" not in body, (name, suffix)
        status, body, _ = await post(pages_app, f"/status/{token}/reply", json={"client_message_id": "c-1", "text": "x"})
        assert status == code, name
    status, html, _ = await get(pages_app, f"/status/{expired_token(TICKET)}", headers={"Accept-Language": "en"})
    assert "This link has expired" in html and 'href="/status?lang=en"' in html
    for token in (forged(pages_app.token(TICKET, "csat")), good, expired_token(TICKET, "csat")):
        status, _, _ = await get(pages_app, f"/csat/{token}")
        assert status in (404, 410)
    assert not [k for k in redis_client.scan_iter("tm:intake_chat:status:reply:*")]


async def test_a_lookup_with_the_right_number_and_contact_redirects_to_a_fresh_link(pages_app):
    await pages_app.stored_ticket(TICKET, email="Ann@Example.com")
    await pages_app.stored_ticket("TM-10002", channel="phone", email=None, phone="+8613812345678")
    status, _, headers = await post(pages_app, "/api/v1/status/lookup?lang=en",
                                    data={"ticket": "tm-10001", "contact": " ann@example.COM "})
    assert status == 303
    location = headers["Location"]
    assert re.fullmatch(r"/status/TM-10001\.status\.[0-9a-z]+\.[A-Za-z0-9_-]{22}\?lang=en", location)
    status, html, _ = await get(pages_app, location)
    assert status == 200 and "Where is my parcel?" in html
    status, _, headers = await post(pages_app, "/api/v1/status/lookup", data={"ticket": "10002", "contact": "138 1234 5678"})
    assert status == 303 and headers["Location"].startswith("/status/TM-10002.status.")
    status, html, _ = await get(pages_app, "/status?lang=zh")
    assert status == 200 and "查询工单进度" in html and 'action="/api/v1/status/lookup?lang=zh"' in html


async def test_a_wrong_ticket_and_a_wrong_contact_get_the_same_vague_answer(pages_app):
    await pages_app.stored_ticket(TICKET)
    answers = []
    for ticket, contact in (("TM-10001", "bob@example.com"), ("TM-99999", "ann@example.com"),
                            ("TM-10001", "13812345678"), ("garbage", "")):
        status, body, headers = await post(pages_app, "/api/v1/status/lookup", json={"ticket": ticket, "contact": contact},
                                           headers={"X-Forwarded-For": f"10.0.0.{len(answers) + 1}"})
        assert "Location" not in headers
        answers.append((status, body))
    assert len(set(answers)) == 1 and answers[0][0] == 404 and "No ticket matches" in answers[0][1]
    status, html, _ = await post(pages_app, "/api/v1/status/lookup?lang=en",
                                 data={"ticket": "TM-10001", "contact": "bob@example.com"})
    assert status == 404 and "No ticket matches" in html and 'value="TM-10001"' in html


async def test_lookups_are_limited_per_ticket_number_and_per_client_address(pages_app):
    await pages_app.stored_ticket(TICKET)
    for n in range(5):  # five guesses at one ticket, each from another address
        status, _, _ = await post(pages_app, "/api/v1/status/lookup", json={"ticket": TICKET, "contact": f"x{n}@e.com"},
                                  headers={"X-Forwarded-For": f"10.1.0.{n}"})
        assert status == 404
    status, body, headers = await post(pages_app, "/api/v1/status/lookup",
                                       json={"ticket": TICKET, "contact": "ann@example.com"},
                                       headers={"X-Forwarded-For": "10.1.0.99"})
    assert status == 429 and int(headers["Retry-After"]) > 0 and "Too many attempts" in body
    for n in range(20):  # one address trying many tickets
        await post(pages_app, "/api/v1/status/lookup", json={"ticket": f"TM-2{n:04d}", "contact": "a@e.com"},
                   headers={"X-Forwarded-For": "spoofed, 10.2.0.1"})
    status, _, _ = await post(pages_app, "/api/v1/status/lookup", json={"ticket": "TM-30000", "contact": "a@e.com"},
                              headers={"X-Forwarded-For": "10.9.9.9, 10.2.0.1"})  # the proxy's entry is the last
    assert status == 429
    status, _, _ = await post(pages_app, "/api/v1/status/lookup", json={"ticket": "TM-30000", "contact": "a@e.com"},
                              headers={"X-Forwarded-For": "10.2.0.2"})
    assert status == 404


async def test_a_reply_on_the_page_is_a_customer_message_on_the_ticket_published_once(pages_app, amqp_uri):
    await pages_app.stored_ticket(TICKET)
    path = pages_app.status_path(TICKET)
    async with AsyncEventListener(amqp_uri, ev.INTAKE_CHAT, [ev.MESSAGE_RECEIVED]) as bus:
        reply = {"client_message_id": "c-1", "text": "The tracking number is <b>42</b>"}
        status, body, _ = await post(pages_app, f"{path}/reply", json=reply)
        assert status == 202 and '"message_id": "sp-c-1"' in body
        status, _, _ = await post(pages_app, f"{path}/reply", json=reply)  # resent after a lost answer
        assert status == 202
        status, _, headers = await post(pages_app, f"{path}/reply?lang=en", data={"client_message_id": "c-2",
                                                                                   "text": "sentinel"})
        assert status == 303 and headers["Location"] == f"{path}?lang=en&notice=reply_sent"
        await bus.wait_for(lambda t, b: b["text"] == "sentinel")
        first = bus.events[0][1]
        assert [b["message_id"] for _, b in bus.events] == ["sp-c-1", "sp-c-2"]
        assert first["ticket_id"] == TICKET and first["channel"] == "email" and first["trace_id"] == "trace-customer-pages"
        assert first["source"] == {"via": "status_page"} and first["text"] == "The tracking number is <b>42</b>"
        assert first["event_id"] == stable_event_id(ev.MESSAGE_RECEIVED, TICKET, "sp-c-1")
    view = await pages_app.wait_view(TICKET, lambda v: len(v["messages"]) == 3)
    assert [m["from"] for m in view["messages"]] == ["customer"] * 3


async def test_bad_replies_and_replies_to_a_closed_ticket_are_refused(pages_app, amqp_uri, redis_client):
    await pages_app.stored_ticket(TICKET)
    path = pages_app.status_path(TICKET)
    for payload, code in (({"client_message_id": "c-1", "text": "字" * 5001}, "text_too_long"),
                          ({"client_message_id": "c-1", "text": "  "}, "empty_text"),
                          ({"client_message_id": "no spaces", "text": "hi"}, "invalid_client_message_id")):
        status, body, _ = await post(pages_app, f"{path}/reply", json=payload)
        assert status == 400 and code in body
    status, html, _ = await post(pages_app, f"{path}/reply?lang=en", data={"client_message_id": "c-1", "text": "x" * 6000})
    assert status == 400 and "at most 5000 characters" in html
    status, _, _ = await post(pages_app, f"{path}/reply", data=b"x" * 70_000,
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 413
    await pages_app.resolved(TICKET, "spam")
    await pages_app.wait_view(TICKET, lambda v: v["status"] == "resolved")
    status, body, _ = await post(pages_app, f"{path}/reply", json={"client_message_id": "c-9", "text": "hello?"})
    assert status == 409 and "reply_closed" in body
    assert not [k for k in redis_client.scan_iter("tm:intake_chat:status:reply:*")]


async def test_the_stream_sends_the_view_and_then_every_change(pages_app):
    await pages_app.stored_ticket(TICKET)
    async with pages_app.http.get(f"{pages_app.status_path(TICKET)}/events?lang=zh") as stream:
        assert stream.status == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
        first = await read_sse_view(stream)
        assert first["status"] == "received" and first["status_label"] == "已收到"
        await pages_app.agent_replied(TICKET, "已经在查了")
        update = await read_sse_view(stream)
        assert update["messages"][-1] == {**update["messages"][-1], "from": "agent", "author": "李娜",
                                          "text": "已经在查了"}
        await pages_app.status_changed(TICKET, "waiting_on_customer")
        assert (await read_sse_view(stream))["status"] == "waiting_on_you"
    # The server stops quickly with a page open: the stream ends on shutdown.
    async with pages_app.http.get(f"{pages_app.status_path(TICKET)}/events") as stream:
        await read_sse_view(stream)
        stop = asyncio.create_task(pages_app.service.stop())  # the fixture's second stop does nothing
        assert await asyncio.wait_for(stream.content.read(), 5) == b""
        await asyncio.wait_for(stop, 5)


async def test_a_fresh_link_to_a_ticket_not_projected_yet_waits_for_it(pages_app):
    status, html, _ = await get(pages_app, f"/status/{pages_app.token('TM-10077')}?lang=en")
    assert status == 200 and "We are registering your ticket" in html
    old = PagesApp.token("TM-10077", at=now() - timedelta(days=10))
    status, html, _ = await get(pages_app, f"/status/{old}?lang=en")
    assert status == 404 and "no longer shown here" in html
    async with pages_app.http.get(f"{pages_app.status_path('TM-10077')}/events") as stream:
        assert (await read_sse_view(stream))["known"] is False
        await pages_app.ticket_received("TM-10077")
        assert (await read_sse_view(stream))["known"] is True


async def test_a_contact_folded_into_the_open_ticket_leads_to_it(pages_app):
    await pages_app.stored_ticket(TICKET)
    await pages_app.stored_ticket("TM-10002", channel="chat", subject="Also", text="Also: wrong colour", email=None)
    await pages_app.attached("TM-10002", TICKET, "Also: wrong colour")
    view = await pages_app.wait_view(TICKET, lambda v: len(v["messages"]) == 2)
    assert [m["text"] for m in view["messages"]] == ["Where is my parcel?", "Also: wrong colour"]

    async def redirected():
        # The projection writes the open ticket's view first, the folded contact's pointer next.
        status, _, headers = await get(pages_app, pages_app.status_path("TM-10002") + "?lang=en")
        return headers if status == 303 else None

    headers = await wait_until(redirected, 10, "the folded contact's link leads to the open ticket")
    assert headers["Location"].startswith("/status/TM-10001.status.")
    status, html, _ = await get(pages_app, headers["Location"])
    assert status == 200 and "Also: wrong colour" in html
    status, body = await pages_app.view("TM-10002")
    assert status == 200 and body["ticket_id"] == TICKET
