"""The CTI webhook against real RabbitMQ and Redis: what reaches the bus, what is stored."""
from shared.testing.plugin import AsyncEventListener

from services.intake_phone.tests.conftest import BLOCKED


def call(event, call_id="call-1", **extra):
    return {"event": event, "callId": call_id, "from": "138 1234 5678", "to": "010 8888 8888", "direction": "in", **extra}


def phone_keys(redis_client):
    # the replica's heartbeat (tm:mesh:replica:*) is the process's, not a call's
    return sorted(k for k in redis_client.scan_iter("tm:*") if not k.startswith("tm:mesh:"))


async def test_missed_call_becomes_one_callback_ticket_with_e164_number(phone_app, amqp_uri):
    async with AsyncEventListener(amqp_uri, "intake_phone") as bus:
        assert await phone_app.cti(json=call("newCall", queue="sales")) == (200, {})
        assert await phone_app.cti(json=call("hangup", cause="cancel")) == (200, {})
        assert await phone_app.cti(json=call("hangup", cause="cancel")) == (200, {})  # PBX retry
        _, body = await bus.wait_for(lambda t, b: t == "ticket_received")
        assert body["channel"] == "phone" and body["customer"]["phone"] == "+8613812345678"
        assert body["subject"] == "未接来电 / Missed call from +86 138 1234 5678"
        assert body["source"] == {"call_id": "call-1", "to": "+861088888888", "queue": "sales", "cause": "cancel"}
        # a later call's ticket arrives after any duplicate of the first would have
        await phone_app.cti(json=call("hangup", call_id="call-2", cause="noAnswer"))
        await bus.wait_for(lambda t, b: b["source"]["call_id"] == "call-2")
        first = [b for _, b in bus.events if b["source"]["call_id"] == "call-1"]
        assert len(first) == 1
        assert bus.events[1][1]["ticket_id"] != body["ticket_id"]


async def test_answered_call_opens_no_ticket(phone_app, amqp_uri, redis_client):
    async with AsyncEventListener(amqp_uri, "intake_phone") as bus:
        for step in (call("newCall"), call("answer", user="李娜"), call("hangup", cause="normalClearing")):
            assert await phone_app.cti(json=step) == (200, {})
        await phone_app.cti(json=call("hangup", call_id="sentinel", cause="cancel"))
        await bus.wait_for(lambda t, b: b["source"]["call_id"] == "sentinel")
        assert [b["source"]["call_id"] for _, b in bus.events] == ["sentinel"]
    assert len(phone_keys(redis_client)) > 0  # the answered call's state was kept


async def test_form_encoded_events_work(phone_app, amqp_uri):
    async with AsyncEventListener(amqp_uri, "intake_phone") as bus:
        form = {"event": "hangup", "call_id": "form-1", "from": "+86 10 1234 5678", "to": "4008108888",
                "direction": "in", "cause": "noAnswer", "user[]": "voicemail"}
        assert await phone_app.cti(data=form) == (200, {})
        _, body = await bus.wait_for(lambda t, b: True)
        assert body["customer"]["phone"] == "+861012345678" and body["source"]["to"] == "+864008108888"


async def test_wrong_token_is_401_and_changes_nothing(phone_app, amqp_uri, redis_client):
    async with AsyncEventListener(amqp_uri, "intake_phone") as bus:
        status, body = await phone_app.cti(token="wrong-token-wrong-token", json=call("hangup", cause="cancel"))
        assert status == 401 and body["error"]["code"] == "invalid_token"
        assert phone_keys(redis_client) == []
        await phone_app.cti(json=call("hangup", call_id="sentinel", cause="cancel"))
        await bus.wait_for(lambda t, b: True)
        assert [b["source"]["call_id"] for _, b in bus.events] == ["sentinel"]


async def test_bad_requests_are_400_and_write_nothing(phone_app, redis_client):
    bad_json = await phone_app.cti(data=b'{"event": "hangup", ', headers={"Content-Type": "application/json"})
    no_call_id = await phone_app.cti(json={"event": "hangup", "from": "13812345678", "direction": "in"})
    bad_number = await phone_app.cti(json=call("hangup", **{"from": "12-34-not-a-phone"}))
    not_object = await phone_app.cti(json=["hangup"])
    wrong_type = await phone_app.cti(data=b"event=hangup", headers={"Content-Type": "text/plain"})
    assert [r[0] for r in (bad_json, no_call_id, bad_number, not_object, wrong_type)] == [400, 400, 400, 400, 415]
    assert [r[1]["error"]["code"] for r in (bad_json, no_call_id, bad_number)] == ["invalid_json", "missing_call_id", "invalid_number"]
    assert phone_keys(redis_client) == []


async def test_blocked_caller_is_rejected_busy_and_nothing_is_stored(phone_app, redis_client):
    status, body = await phone_app.cti(json=call("newCall", **{"from": BLOCKED}))
    assert (status, body) == (200, {"action": "reject", "reason": "busy"})
    assert phone_keys(redis_client) == []


async def test_healthz_reports_both_dependencies(phone_app):
    async with phone_app.http.get("/healthz") as resp:
        body = await resp.json()
    assert resp.status == 200 and body["checks"] == {"amqp": True, "redis": True}
