"""POST /api/chat/messages, the page and the widget script, against real RabbitMQ and Redis."""
import hashlib

import structlog.testing

from shared.intake_ledger import IntakeLedger, stable_event_id
from shared.testing.plugin import AsyncEventListener

from services.intake_chat.tests.conftest import VISITOR, VISITOR_ID


def message(cmid="m-1", text="你好，我的订单 #123 还没有到", **extra):
    return {"visitor_id": VISITOR, "client_message_id": cmid, "text": text, **extra}


def chat_keys(redis_client):
    """Everything but the abuse counters (counting a refused request is the point of them) and the
    replica's heartbeat (tm:mesh:replica:*, the process's, not a chat's)."""
    return sorted(k for k in redis_client.scan_iter("tm:*") if not k.startswith(("tm:intake_chat:rate:", "tm:mesh:")))


async def test_first_message_opens_a_ticket_and_the_next_joins_it(chat_app, amqp_uri, redis_client):
    async with AsyncEventListener(amqp_uri, "intake_chat") as bus:
        status, first = await chat_app.post(message(name="张伟", email="zhang.wei@example.com", language="zh"))
        assert status == 202 and first == {"ticket_id": "TM-10001", "message_id": "m-1", "seq": 1}
        assert IntakeLedger(redis_client, "intake_chat").is_published("TM-10001")  # marked with the confirm
        _, opened = await bus.wait_for(lambda t, b: t == "ticket_received")
        assert opened["ticket_id"] == "TM-10001" and opened["channel"] == "chat"
        assert opened["subject"] == "你好，我的订单 #123 还没有到"
        assert opened["customer"] == {"name": "张伟", "email": "zhang.wei@example.com", "phone": None,
                                      "chat_visitor_id": VISITOR_ID, "language": "zh", "tier": None,
                                      "external_user_id": None, "verified": ["chat_visitor"]}
        status, second = await chat_app.post(message("m-2", "还在吗？"))
        assert status == 202 and second == {"ticket_id": "TM-10001", "message_id": "m-2", "seq": 2}
        _, joined = await bus.wait_for(lambda t, b: t == "message_received")
        assert joined["ticket_id"] == "TM-10001" and joined["message_id"] == "m-2"
        assert joined["trace_id"] == opened["trace_id"] and joined["customer"]["name"] == "张伟"


async def test_same_client_message_id_twice_is_one_event_with_the_same_answer(chat_app, amqp_uri):
    async with AsyncEventListener(amqp_uri, "intake_chat") as bus:
        first = await chat_app.post(message())
        again = await chat_app.post(message(text="a different retry body is ignored"))
        assert first == again == (202, {"ticket_id": "TM-10001", "message_id": "m-1", "seq": 1})
        await chat_app.post(message("m-sentinel", "sentinel"))
        await bus.wait_for(lambda t, b: b.get("message_id") == "m-sentinel")
        assert [t for t, _ in bus.events] == ["ticket_received", "message_received"]
        assert bus.events[0][1]["event_id"] == stable_event_id("ticket_received", "TM-10001")


async def test_bad_payloads_are_400_and_write_nothing(chat_app, redis_client):
    cases = [
        (None, b"{not json", "invalid_json"),
        (["a", "list"], None, "invalid_json"),
        (message(text=""), None, "empty_text"),
        (message(text="字" * 5001), None, "text_too_long"),
        (message(visitor_id="short"), None, "invalid_session"),
        ({k: v for k, v in message().items() if k != "client_message_id"}, None, "invalid_client_message_id"),
        (message(email="nope"), None, "invalid_email"),
    ]
    for payload, raw, code in cases:
        status, body = await chat_app.post(payload, data=raw, headers={"Content-Type": "application/json"} if raw else None)
        assert (status, body["error"]["code"]) == (400, code), payload
    status, body = await chat_app.post(message(text="x" * 70_000))
    assert status == 413 and body["error"]["code"] == "request_too_large"
    assert chat_keys(redis_client) == []


async def test_foreign_origin_is_refused_and_allowed_origin_gets_cors(chat_app, redis_client):
    status, body = await chat_app.post(message(), headers={"Origin": "https://evil.example"})
    assert status == 403 and body["error"]["code"] == "origin_not_allowed"
    assert chat_keys(redis_client) == []
    async with chat_app.http.options("/api/chat/messages", headers={"Origin": "http://localhost:3000"}) as resp:
        assert resp.status == 204 and resp.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"


async def test_page_speaks_the_visitors_language_and_loads_the_widget(chat_app):
    async with chat_app.http.get("/", headers={"Accept-Language": "en-US,en;q=0.9"}) as resp:
        english = await resp.text()
    async with chat_app.http.get("/?lang=zh", headers={"Accept-Language": "en-US"}) as resp:
        chinese = await resp.text()
    assert "<title>Customer support chat</title>" in english and 'data-lang="en"' in english
    assert "<title>在线客服</title>" in chinese and 'lang="zh-CN"' in chinese
    assert 'src="/widget.js"' in chinese and "Content-Security-Policy" in resp.headers
    async with chat_app.http.get("/widget.js") as resp:
        assert resp.content_type == "application/javascript" and "textContent" in await resp.text()


async def test_unknown_route_is_a_json_404(chat_app):
    async with chat_app.http.get("/nope") as resp:
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"


async def test_logs_name_the_visitor_by_a_hash_never_by_its_id(chat_app, amqp_uri):
    # The session secret is the credential that reads a transcript: it must not reach the logs,
    # and the visitor id derived from it is logged only as a short hash.
    with structlog.testing.capture_logs() as logs:
        async with AsyncEventListener(amqp_uri, "intake_chat") as bus:
            assert (await chat_app.post(message()))[0] == 202
            assert (await chat_app.post(message("m-2", "还在吗？")))[0] == 202
            await bus.wait_for(lambda t, b: t == "message_received")
    facts = {e["event"]: e for e in logs}
    expected = hashlib.sha256(VISITOR_ID.encode()).hexdigest()[:12]
    assert facts["chat_ticket_opened"]["visitor"] == expected
    assert facts["chat_message_received"]["visitor"] == expected
    assert not [e for e in logs if VISITOR in repr(e) or VISITOR_ID in repr(e)]
