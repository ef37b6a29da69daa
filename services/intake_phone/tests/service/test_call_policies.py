"""CTI sequences through the webhook, real RabbitMQ and Redis: what each kind of call becomes.

Normal (answered + wrap-up), missed, voicemail, out of order, duplicated, folded; the policy
file's lines and wrap-up codes decide (see conftest.TEST_POLICY).
"""
import asyncio

from shared.intake_ledger import stable_event_id
from shared.testing.plugin import AsyncEventListener

from services.intake_phone.tests.conftest import TEST_POLICY, write_policy
from services.intake_phone.tests.service.test_cti_webhook import sentinel


def cti(event, call_id, caller="13812345678", **extra):
    return {"event": event, "callId": call_id, "from": caller, "to": "4008001234", "direction": "in", **extra}


async def post_all(phone_app, *events):
    for event in events:
        status, body = await phone_app.cti(json=event)
        assert status == 200, body


async def test_answered_call_resolved_on_first_contact(phone_app, amqp_uri):
    async with AsyncEventListener(amqp_uri, "intake_phone") as bus:
        await post_all(phone_app,
                       cti("newCall", "ok-1", user="李娜"),
                       cti("answer", "ok-1", user="李娜", answeringNumber="8001"),
                       cti("hangup", "ok-1", cause="normalClearing"),
                       cti("wrapUp", "ok-1", wrapUpCode="已解决", notes="客户询问发票抬头，已告知。", agent="li.na"))
        _, ticket = await bus.wait_for(lambda t, b: t == "ticket_received")
        assert ticket["text"].startswith("客户询问发票抬头，已告知。")
        assert ticket["subject"] == "来电记录 / Call from +86 138 1234 5678 (已解决)"
        assert ticket["source"] == {"call_id": "ok-1", "to": "+864008001234", "queue": "", "line": "hotline",
                                    "category": "call", "callback": "false", "wrap_up_code": "已解决",
                                    "resolved_on_first_contact": "true", "agent_id": "li.na", "answered_by": "李娜"}
        await post_all(phone_app, cti("wrapUp", "ok-1", wrapUpCode="follow_up", notes="again"))  # first wins
        assert [b["source"]["call_id"] for _, b in await sentinel(phone_app, bus)] == ["ok-1"]


async def test_answered_call_left_open_by_its_wrap_up_code_on_the_hangup(phone_app, amqp_uri):
    async with AsyncEventListener(amqp_uri, "intake_phone") as bus:
        await post_all(phone_app,
                       cti("newCall", "open-1"), cti("answer", "open-1", user="Sam"),
                       cti("hangup", "open-1", cause="normalClearing", wrapUpCode="follow_up", notes="needs a refund"))
        _, ticket = await bus.wait_for(lambda t, b: t == "ticket_received")
        assert ticket["source"]["resolved_on_first_contact"] == "false" and "agent_id" not in ticket["source"]
        # An unknown code is treated as open (wrap_up_codes.unknown): a person looks at it.
        await post_all(phone_app, cti("newCall", "open-2", caller="13812349999"), cti("answer", "open-2"),
                       cti("wrapUp", "open-2", wrapUpCode="NEW-CODE"))
        _, second = await bus.wait_for(lambda t, b: b["source"].get("call_id") == "open-2")
        assert second["source"]["resolved_on_first_contact"] == "false"
        assert "（无备注）/ (no notes)" in second["text"]


async def test_voicemail_ticket_has_the_transcript_as_its_body(phone_app, amqp_uri):
    async with AsyncEventListener(amqp_uri, "intake_phone") as bus:
        await post_all(phone_app,
                       cti("newCall", "vm-1"), cti("answer", "vm-1", user="voicemail"),
                       cti("voicemail", "vm-1", transcript="你好，我的订单 12345 一直没发货，请回电。",
                           recordingUrl="https://pbx.example.com/vm/vm-1.wav"),
                       cti("hangup", "vm-1", cause="normalClearing"))
        _, ticket = await bus.wait_for(lambda t, b: t == "ticket_received")
        assert ticket["text"].startswith("你好，我的订单 12345 一直没发货，请回电。\n")
        assert "Recording: https://pbx.example.com/vm/vm-1.wav" in ticket["text"]
        assert ticket["subject"] == "语音留言 / Voicemail from +86 138 1234 5678"
        assert ticket["source"]["category"] == "voicemail" and ticket["source"]["cause"] == "voicemail"
        assert ticket["source"]["recording_url"] == "https://pbx.example.com/vm/vm-1.wav"
        assert [t for t, _ in await sentinel(phone_app, bus)] == ["ticket_received"]  # no second message


async def test_transcript_after_the_hangup_is_added_to_the_ticket_once(phone_app, amqp_uri):
    async with AsyncEventListener(amqp_uri, "intake_phone") as bus:
        # A PBX that never reported the voicemail answering: the hang-up alone looks missed ...
        await post_all(phone_app, cti("newCall", "vm-2"), cti("hangup", "vm-2", cause="noAnswer"))
        _, ticket = await bus.wait_for(lambda t, b: t == "ticket_received")
        assert ticket["source"]["category"] == "callback"
        # ... until the transcript arrives: it joins that ticket, once however often it is sent.
        late = cti("voicemail", "vm-2", transcript="请尽快回电", recordingUrl="https://pbx.example.com/2.wav")
        await post_all(phone_app, late, late)
        _, message = await bus.wait_for(lambda t, b: t == "message_received")
        assert message["ticket_id"] == ticket["ticket_id"] and message["trace_id"] == ticket["trace_id"]
        assert message["text"].startswith("请尽快回电\n") and message["source"]["category"] == "voicemail"
        assert message["event_id"] == stable_event_id("message_received", ticket["ticket_id"], message["message_id"])
        assert [t for t, _ in await sentinel(phone_app, bus)] == ["ticket_received", "message_received"]


async def test_out_of_order_and_duplicated_events_make_the_same_single_ticket(phone_app, amqp_uri):
    async with AsyncEventListener(amqp_uri, "intake_phone") as bus:
        # hang-up first, then the newCall the PBX retried, then both again
        hangup, ring = cti("hangup", "ooo-1", cause="cancel"), cti("newCall", "ooo-1", queue="support")
        await post_all(phone_app, hangup, ring, hangup, ring)
        # an answer that arrives after the hang-up does not make the call answered
        await post_all(phone_app, cti("answer", "ooo-1", user="late"))
        # a wrap-up before its answer: the call is answered by the agent who wrapped up
        await post_all(phone_app, cti("wrapUp", "ooo-2", caller="13812340002", wrapUpCode="resolved", agent="li.na"),
                       cti("answer", "ooo-2", caller="13812340002", user="李娜"),
                       cti("newCall", "ooo-2", caller="13812340002"),
                       cti("hangup", "ooo-2", caller="13812340002", cause="normalClearing"))
        events = await sentinel(phone_app, bus)
        assert [(b["source"]["call_id"], b["source"]["category"]) for _, b in events] == [
            ("ooo-1", "callback"), ("ooo-2", "call")]
        assert events[0][1]["source"]["queue"] == ""  # the hang-up came first and knew no queue
        assert events[1][1]["source"]["resolved_on_first_contact"] == "true"


async def test_concurrent_duplicates_make_one_ticket(phone_app, amqp_uri):
    async with AsyncEventListener(amqp_uri, "intake_phone") as bus:
        hangup = cti("hangup", "dup-1", cause="busy")
        results = await asyncio.gather(*(phone_app.cti(json=hangup) for _ in range(8)))
        assert results == [(200, {})] * 8
        events = await sentinel(phone_app, bus)
        # Requests racing each other may each publish before any marks the call announced: the
        # same ticket with the same event id (at-least-once; consumers dedupe on event_id).
        assert {(t, b["ticket_id"], b["event_id"]) for t, b in events} == {
            ("ticket_received", events[0][1]["ticket_id"], stable_event_id("ticket_received", events[0][1]["ticket_id"]))}


async def test_repeated_missed_calls_fold_into_one_callback_ticket(phone_app, amqp_uri):
    async with AsyncEventListener(amqp_uri, "intake_phone") as bus:
        for n in range(3):  # the sales line folds within 30 minutes
            await post_all(phone_app, cti("newCall", f"rep-{n}", queue="sales"),
                           cti("hangup", f"rep-{n}", cause="noAnswer", queue="sales"))
        # the same caller on a line that does not fold, and another caller on the sales line
        await post_all(phone_app, cti("hangup", "other-line", cause="noAnswer"),
                       cti("hangup", "other-caller", caller="13812340003", cause="noAnswer", queue="sales"))
        events = await sentinel(phone_app, bus)
        assert [(t, b["source"]["call_id"]) for t, b in events] == [
            ("ticket_received", "rep-0"), ("message_received", "rep-1"), ("message_received", "rep-2"),
            ("ticket_received", "other-line"), ("ticket_received", "other-caller")]
        first = events[0][1]
        assert first["source"]["line"] == "sales-line" and first["source"]["category"] == "callback"
        for _, message in events[1:3]:
            assert message["ticket_id"] == first["ticket_id"] and message["trace_id"] == first["trace_id"]
            assert message["text"].startswith("再次未接来电") and message["source"]["folded"] == "true"
        assert len({b["ticket_id"] for _, b in events}) == 3


async def test_lines_whose_policy_ignores_calls_make_no_ticket(phone_app, amqp_uri):
    async with AsyncEventListener(amqp_uri, "intake_phone") as bus:
        await post_all(phone_app,
                       cti("hangup", "q-1", queue="after-hours", cause="cancel"),
                       cti("newCall", "q-2", queue="after-hours", caller="13812340004"),
                       cti("voicemail", "q-2", caller="13812340004", transcript="hello"),
                       cti("newCall", "q-3", caller="anonymous"),   # missed, but nobody to call back
                       cti("hangup", "q-3", caller="anonymous", cause="cancel"),
                       cti("hangup", "q-4", cause="forwarded", caller="13812340005"),
                       cti("newCall", "q-5", direction="out", caller="8001"),
                       cti("hangup", "q-5", direction="out", caller="8001", cause="noAnswer"))
        assert await sentinel(phone_app, bus) == []


async def test_voicemail_from_a_hidden_number_still_opens_a_ticket(phone_app, amqp_uri):
    async with AsyncEventListener(amqp_uri, "intake_phone") as bus:
        await post_all(phone_app, cti("voicemail", "hid-1", caller="anonymous", transcript="我是王先生，电话 13800001111"))
        _, ticket = await bus.wait_for(lambda t, b: True)
        assert ticket["customer"]["phone"] is None and ticket["subject"] == "语音留言 / Voicemail from 未知号码 / unknown number"


async def test_a_policy_edit_applies_without_a_restart(phone_app, amqp_uri, policy_file):
    async with AsyncEventListener(amqp_uri, "intake_phone") as bus:
        await post_all(phone_app, cti("hangup", "edit-1", cause="cancel"))
        await bus.wait_for(lambda t, b: b["source"]["call_id"] == "edit-1")
        lines = [{**line, "missed": "ignore"} if line["name"] == "hotline" else line for line in TEST_POLICY["lines"]]
        write_policy(policy_file, {**TEST_POLICY, "lines": lines})
        await post_all(phone_app, cti("hangup", "edit-2", caller="13812340006", cause="cancel"))
        assert [b["source"]["call_id"] for _, b in await sentinel(phone_app, bus)] == ["edit-1"]
        write_policy(policy_file, {"lines": "not a list"})  # a broken edit keeps the version in use
        await post_all(phone_app, cti("hangup", "edit-3", caller="13812340007", cause="cancel"))
        await phone_app.cti(json={"event": "hangup", "callId": "sentinel-2", "from": "13700000002",
                                  "direction": "in", "cause": "cancel"})
        await bus.wait_for(lambda t, b: b["source"]["call_id"] == "sentinel-2")
        assert "edit-3" not in [b["source"]["call_id"] for _, b in bus.events]
