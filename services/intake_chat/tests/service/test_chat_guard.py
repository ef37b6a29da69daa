"""Who may chat and how much: verified visitors, isolation, blocked addresses, rate limits, uploads."""
import hashlib
from pathlib import Path

import aiohttp
import pytest

from shared.testing.plugin import AsyncEventListener

from services.intake_chat.config import Settings
from services.intake_chat.identity import user_hash, verified_visitor_id
from services.intake_chat.service import make_service
from services.intake_chat.tests.conftest import VISITOR, chat_env
from services.intake_chat.tests.service.test_chat_socket import open_chat, receive
from services.intake_chat.tests.unit.test_chat_domain import PNG

SECRET = "shop-secret-0123456789"


@pytest.fixture
def chat_settings_env():
    return {"TM_CHAT_IDENTITY_SECRETS": f"shop={SECRET}", "TM_CHAT_UPLOAD_MAX_BYTES": "4096",
            "TM_CHAT_RATE_LIMITS": "session_messages=3/3600,session_uploads=2/3600"}


def conversation_keys(redis_client):
    """Keys of conversations (tickets, messages, uploads), not the abuse counters or a visitor's profile."""
    return sorted(k for k in redis_client.scan_iter("tm:intake_chat:*")
                  if not k.startswith(("tm:intake_chat:rate:", "tm:intake_chat:visitor:")))


async def test_a_verified_user_is_the_same_visitor_on_every_device(chat_app, amqp_uri):
    proof = {"site": "shop", "user_id": "user-42", "user_hash": user_hash(SECRET.encode(), "user-42")}
    async with AsyncEventListener(amqp_uri, "intake_chat") as bus:
        laptop, welcome = await open_chat(chat_app, visitor_id=None, **proof)
        assert welcome["verified"] and welcome["visitor_id"] == verified_visitor_id("shop", "user-42")
        await laptop.send_json({"type": "message", "client_message_id": "m-1", "text": "订单号 123"})
        await receive(laptop, "ack")
        _, opened = await bus.wait_for(lambda t, b: t == "ticket_received")
        assert opened["source"]["verified"] == "true"
        # The company's user id, checked by HMAC: the customer profile joins this user's contacts.
        assert opened["customer"]["external_user_id"] == "user-42"
        assert opened["customer"]["verified"] == ["chat_visitor", "external_user"]
    phone, welcome = await open_chat(chat_app, visitor_id=None, **proof)
    assert [e["text"] for e in welcome["history"]] == ["订单号 123"]
    for sock in (laptop, phone):
        await sock.close()


async def test_a_forged_hash_is_refused_and_sees_nothing(chat_app, redis_client):
    victim, welcome = await open_chat(chat_app)
    visitor_id = welcome["visitor_id"]
    await victim.send_json({"type": "message", "client_message_id": "m-1", "text": "my secret order"})
    await receive(victim, "ack")
    forger = await chat_app.http.ws_connect("/ws")
    await forger.send_json({"type": "hello", "site": "shop", "user_id": "user-42", "user_hash": "0" * 64})
    assert (await receive(forger, "error"))["code"] == "identity_not_verified"
    await forger.send_json({"type": "sync", "since": 0})
    assert (await receive(forger, "error"))["code"] == "hello_required"
    # knowing the victim's visitor id (it is in events and on the agent's screen) opens nothing
    snoop, welcome = await open_chat(chat_app, visitor_id=visitor_id)
    assert welcome["visitor_id"] != visitor_id and welcome["history"] == [] and welcome["ticket_id"] is None
    for sock in (victim, forger, snoop):
        await sock.close()


async def test_per_visitor_message_limit_refuses_without_writing(chat_app, amqp_uri, redis_client):
    async with AsyncEventListener(amqp_uri, "intake_chat") as bus:
        ws, _ = await open_chat(chat_app)
        for i in range(3):
            await ws.send_json({"type": "message", "client_message_id": f"m-{i}", "text": f"message {i}"})
            await receive(ws, "ack")
        await ws.send_json({"type": "message", "client_message_id": "m-3", "text": "one too many"})
        error = await receive(ws, "error")
        assert error["code"] == "rate_limited" and error["client_message_id"] == "m-3" and error["retry_after"] > 0
        async with chat_app.http.post("/api/chat/messages", json={"session": VISITOR, "client_message_id": "m-4",
                                                                   "text": "again"}) as resp:
            status, body = resp.status, await resp.json()
            # RFC 6585: a client (or proxy) learns when to come back from the header, not the text
            assert 0 < int(resp.headers["Retry-After"]) and abs(int(resp.headers["Retry-After"]) - error["retry_after"]) <= 2
        assert status == 429 and body["error"]["code"] == "rate_limited"
        await bus.wait_for(lambda t, b: b.get("text") == "message 2")
        assert len(bus.events) == 3
        assert not [k for k in conversation_keys(redis_client) if k.endswith(":m-3") or k.endswith(":m-4")]
        await ws.close()


async def upload(chat_app, data, filename="photo.png", **fields):
    form = aiohttp.FormData(quote_fields=False)  # as browsers send names: UTF-8, not %-quoted
    for name, value in ({"session": VISITOR} | fields).items():
        form.add_field(name, value)
    form.add_field("file", data, filename=filename, content_type="image/png")  # the browser's word, not trusted
    async with chat_app.http.post("/api/chat/uploads", data=form) as resp:
        return resp.status, await resp.json()


async def test_an_upload_is_sniffed_stored_and_sent_with_a_message(chat_app, amqp_uri, tmp_path, redis_client):
    status, body = await upload(chat_app, b"#!/bin/sh\nrm -rf /\n", "photo.png")
    assert (status, body["error"]["code"]) == (415, "file_type_not_allowed")
    status, body = await upload(chat_app, PNG + b"\0" * 5000)
    assert (status, body["error"]["code"]) == (413, "file_too_large")
    status, body = await upload(chat_app, PNG, session="short")
    assert (status, body["error"]["code"]) == (400, "invalid_session")
    assert conversation_keys(redis_client) == [] and not (tmp_path / "data").exists()

    status, uploaded = await upload(chat_app, PNG, "C:\\Users\\ann\\截图.png")
    assert status == 201 and uploaded["content_type"] == "image/png" and uploaded["filename"] == "截图.png"
    sha = hashlib.sha256(PNG).hexdigest()
    assert (tmp_path / "data" / "attachments" / sha[:2] / sha).read_bytes() == PNG
    async with AsyncEventListener(amqp_uri, "intake_chat") as bus:
        ws, _ = await open_chat(chat_app)
        await ws.send_json({"type": "message", "client_message_id": "m-1", "files": [uploaded["upload_id"]]})
        await receive(ws, "ack")
        _, opened = await bus.wait_for(lambda t, b: t == "ticket_received")
    assert opened["text"] == "" and opened["subject"] == "截图.png"
    assert opened["attachments"] == [{"filename": "截图.png", "content_type": "image/png", "size": len(PNG),
                                      "sha256": sha, "content_id": None, "stored": True}]
    status, body = await upload(chat_app, PNG)
    assert status == 201
    status, body = await upload(chat_app, PNG)
    assert (status, body["error"]["code"]) == (429, "rate_limited")
    await ws.close()


async def test_blocked_addresses_get_nothing(amqp_uri, redis_url, tmp_path, redis_client):
    settings = Settings.from_env(chat_env(amqp_uri, redis_url, tmp_path, TM_CHAT_BLOCKED_IPS="127.0.0.0/8"))
    service = make_service(settings)
    await service.start()
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{service.port}") as http:
            async with http.get("/") as resp:
                assert resp.status == 403 and (await resp.json())["error"]["code"] == "address_blocked"
            async with http.post("/api/chat/messages", json={"session": VISITOR, "client_message_id": "m-1",
                                                             "text": "hi"}) as resp:
                assert resp.status == 403
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await http.ws_connect("/ws")
            assert info.value.status == 403
    finally:
        await service.stop()
    assert list(redis_client.scan_iter("tm:intake_chat:*")) == []


def test_the_widget_sets_text_never_markup():
    widget = (Path(__file__).resolve().parents[2] / "static" / "widget.js").read_text(encoding="utf-8")
    assert "innerHTML" not in widget and "insertAdjacentHTML" not in widget and "document.write" not in widget
