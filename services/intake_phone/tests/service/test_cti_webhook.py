"""The CTI webhook against real RabbitMQ and Redis: the Generic CTI contract, and bad input."""
import json

from shared.testing.plugin import AsyncEventListener

from services.intake_phone.tests.conftest import BLOCKED, CTI_TOKEN


def call(event, call_id="call-1", **extra):
    return {"event": event, "callId": call_id, "from": "138 1234 5678", "to": "010 8888 8888", "direction": "in", **extra}


def phone_keys(redis_client):
    # the replica's heartbeat (tm:mesh:replica:*) is the process's, not a call's
    return sorted(k for k in redis_client.scan_iter("tm:*") if not k.startswith("tm:mesh:"))


async def sentinel(phone_app, bus, caller="13700000001"):
    """A missed call published after everything before it: what came before it was all there was."""
    await phone_app.cti(json={"event": "hangup", "callId": "sentinel", "from": caller, "direction": "in",
                              "cause": "cancel"})
    await bus.wait_for(lambda t, b: b["source"].get("call_id") == "sentinel")
    return [(t, b) for t, b in bus.events if b["source"].get("call_id") != "sentinel"]


async def test_missed_call_becomes_one_callback_ticket_with_e164_number(phone_app, amqp_uri):
    async with AsyncEventListener(amqp_uri, "intake_phone") as bus:
        assert await phone_app.cti(json=call("newCall", queue="support")) == (200, {})
        assert await phone_app.cti(json=call("hangup", cause="cancel")) == (200, {})
        assert await phone_app.cti(json=call("hangup", cause="cancel")) == (200, {})  # PBX retry
        _, body = await bus.wait_for(lambda t, b: t == "ticket_received")
        assert body["channel"] == "phone" and body["customer"]["phone"] == "+8613812345678"
        assert body["subject"] == "未接来电 / Missed call from +86 138 1234 5678"
        assert body["source"] == {"call_id": "call-1", "to": "+861088888888", "queue": "support", "line": "default",
                                  "category": "callback", "callback": "true", "cause": "cancel"}
        assert [b["source"]["call_id"] for _, b in await sentinel(phone_app, bus)] == ["call-1"]
        assert bus.events[-1][1]["ticket_id"] != body["ticket_id"]


async def test_answered_call_without_wrap_up_opens_no_ticket(phone_app, amqp_uri, redis_client):
    async with AsyncEventListener(amqp_uri, "intake_phone") as bus:
        for step in (call("newCall"), call("answer", user="李娜"), call("hangup", cause="normalClearing")):
            assert await phone_app.cti(json=step) == (200, {})
        assert await sentinel(phone_app, bus) == []
    assert len(phone_keys(redis_client)) > 0  # the answered call's state was kept (a wrap-up may follow)


async def test_form_encoded_events_work(phone_app, amqp_uri):
    async with AsyncEventListener(amqp_uri, "intake_phone") as bus:
        form = {"event": "hangup", "call_id": "form-1", "from": "+86 10 1234 5678", "to": "4008108888",
                "direction": "in", "cause": "noAnswer"}
        assert await phone_app.cti(data=form) == (200, {})
        _, body = await bus.wait_for(lambda t, b: True)
        assert body["customer"]["phone"] == "+861012345678" and body["source"]["to"] == "+864008108888"
        # Zammad's own example: user[] repeated in a form, one per person the call rang.
        ringing = "event=newCall&from=13812340000&to=4008001234&direction=in&callId=form-2&user[]=Alice&user[]=Bob"
        status, answer = await phone_app.cti(data=ringing, headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert (status, answer) == (200, {})


async def test_wrong_token_is_401_and_changes_nothing(phone_app, amqp_uri, redis_client):
    async with AsyncEventListener(amqp_uri, "intake_phone") as bus:
        status, body = await phone_app.cti(token="wrong-token-wrong-token", json=call("hangup", cause="cancel"))
        assert status == 401 and body["error"]["code"] == "invalid_token"
        assert phone_keys(redis_client) == []
        assert await sentinel(phone_app, bus) == []


async def test_bad_requests_are_4xx_json_and_write_nothing(phone_app, redis_client):
    cases = {
        "malformed JSON": dict(data=b'{"event": "hangup", ', headers={"Content-Type": "application/json"}),
        "not UTF-8": dict(data=b'{"event": "\xff"}', headers={"Content-Type": "application/json"}),
        "JSON array": dict(json=["hangup"]),
        "no call id": dict(json={"event": "hangup", "from": "13812345678", "direction": "in"}),
        "unknown event": dict(json=call("ringing")),
        "event missing": dict(json={"callId": "x", "direction": "in"}),
        "invalid number": dict(json=call("hangup", **{"from": "12-34-not-a-phone"})),
        "number as object": dict(json=call("hangup", **{"from": {"n": 1}})),
        "bad direction": dict(json=call("newCall", direction="sideways")),
        "bad recording URL": dict(json=call("voicemail", recordingUrl="file:///etc/passwd")),
        "agent not an id": dict(json=call("wrapUp", agent="<script>")),
        "huge payload": dict(json=call("voicemail", transcript="话" * 200_000)),
        "text/plain": dict(data=b"event=hangup", headers={"Content-Type": "text/plain"}),
    }
    results = {name: await phone_app.cti(**kwargs) for name, kwargs in cases.items()}
    codes = {name: (status, body["error"]["code"]) for name, (status, body) in results.items()}
    assert codes == {
        "malformed JSON": (400, "invalid_json"), "not UTF-8": (400, "invalid_json"),
        "JSON array": (400, "invalid_json"), "no call id": (400, "missing_call_id"),
        "unknown event": (400, "invalid_event"), "event missing": (400, "invalid_event"),
        "invalid number": (400, "invalid_number"), "number as object": (400, "invalid_field"),
        "bad direction": (400, "invalid_direction"), "bad recording URL": (400, "invalid_field"),
        "agent not an id": (400, "invalid_field"), "huge payload": (413, "request_too_large"),
        "text/plain": (415, "unsupported_media_type"),
    }
    assert all(body["error"]["message"] for _, body in results.values())  # a sentence a person can act on
    assert "newCall, answer, hangup, wrapUp, voicemail" in results["unknown event"][1]["error"]["message"]
    assert phone_keys(redis_client) == []


async def test_blocked_caller_is_rejected_busy_and_nothing_is_stored(phone_app, amqp_uri, redis_client):
    async with AsyncEventListener(amqp_uri, "intake_phone") as bus:
        status, body = await phone_app.cti(json=call("newCall", **{"from": BLOCKED}))
        assert (status, body) == (200, {"action": "reject", "reason": "busy"})
        # The rest of that call (the PBX may still report its hang-up) is acknowledged and dropped.
        assert await phone_app.cti(json=call("hangup", cause="busy", **{"from": BLOCKED})) == (200, {})
        assert phone_keys(redis_client) == []
        assert await sentinel(phone_app, bus) == []


async def test_outbound_newcall_from_a_blocked_number_is_not_rejected(phone_app):
    # Blocking is for callers; an agent dialling that number out is answered like any call.
    status, body = await phone_app.cti(json=call("newCall", direction="out", **{"from": "8001", "to": BLOCKED}))
    assert (status, body) == (200, {})


async def test_healthz_reports_both_dependencies(phone_app):
    async with phone_app.http.get("/healthz") as resp:
        body = await resp.json()
    assert resp.status == 200 and body["checks"] == {"amqp": True, "redis": True}


async def test_token_never_reaches_the_response_of_an_error(phone_app):
    status, body = await phone_app.cti(token=CTI_TOKEN + "x", json=call("hangup"))
    assert status == 401 and CTI_TOKEN not in json.dumps(body)
