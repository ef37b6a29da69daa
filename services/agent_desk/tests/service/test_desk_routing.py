"""Issue 5 at the desk: offers, declines, unassignment, transfer/reassign, notes, reopen, tokens,
the supervisor board and presence sweeps — against real RabbitMQ and Redis."""
from __future__ import annotations

import asyncio

import aiohttp

from services.agent_desk.service import DESK_KEY
from services.agent_desk.tests.factories import (PASSWORDS, message_received, offer, sla_event, ticket_classified,
                                                 ticket_escalated, ticket_queued, ticket_received, ticket_transferred,
                                                 ticket_unassigned)
from services.agent_desk.tests.service.test_desk_service import next_frame
from shared.intake_ledger import stable_event_id
from shared.testing.asyncio_helpers import wait_until
from shared.testing.plugin import AsyncEventListener


async def offered_ticket(publish, ws, ticket_id: str = "TM-10001", agent_id: str = "li.na", **offer_args) -> dict:
    await publish("intake_email", "ticket_received", ticket_received(ticket_id))
    await publish("dispatcher", "ticket_assigned", offer(ticket_id, agent_id, **offer_args))
    return (await next_frame(ws, "ticket_assigned"))["ticket"]


async def get(http: aiohttp.ClientSession, path: str, status: int = 200) -> dict:
    response = await http.get(path)
    assert response.status == status, (path, await response.text())
    return await response.json()


async def post(http: aiohttp.ClientSession, path: str, body: dict | None = None, status: int = 200) -> dict:
    response = await http.post(path, json=body)
    assert response.status == status, (path, await response.text())
    return await response.json()


async def test_an_offer_is_pushed_with_its_expiry_and_accepting_emits_one_event(signed_in, publish, amqp_uri):
    li_na = await signed_in("li.na")
    async with li_na.ws_connect("/ws") as ws, AsyncEventListener(amqp_uri, "agent_desk", ["ticket_accepted"]) as bus:
        await next_frame(ws, "worklist")
        ticket = await offered_ticket(publish, ws, seconds=45, attempt=2)
        assert ticket["status"] == "assigned" and ticket["attempt"] == 2 and ticket["offer_expires_at"]
        await post(li_na, "/api/tickets/TM-10001/accept")
        await post(li_na, "/api/tickets/TM-10001/accept")
        _, accepted = await bus.wait_for(lambda t, b: True)
    assert accepted["agent_id"] == "li.na" and len(bus.events) == 1
    assert accepted["attempt"] == 2  # the offer it answers: the dispatcher ignores it for any other


async def test_an_expired_offer_cannot_be_accepted(signed_in, publish):
    li_na = await signed_in("li.na")
    async with li_na.ws_connect("/ws") as ws:
        await next_frame(ws, "worklist")
        await offered_ticket(publish, ws, seconds=-1)
    refused = await post(li_na, "/api/tickets/TM-10001/accept", status=409)
    assert refused["error"]["code"] == "offer_expired"


async def test_decline_emits_ticket_declined_with_a_stable_id_and_drops_the_ticket(signed_in, publish, amqp_uri):
    li_na, sam = await signed_in("li.na"), await signed_in("sam.taylor")
    async with li_na.ws_connect("/ws") as ws, AsyncEventListener(amqp_uri, "agent_desk", ["ticket_declined"]) as bus:
        await next_frame(ws, "worklist")
        ticket = await offered_ticket(publish, ws)
        assert (await sam.post("/api/tickets/TM-10001/decline", json={})).status == 403
        assert (await li_na.post("/api/tickets/TM-10001/decline", json={"reason": 5})).status == 400
        await post(li_na, "/api/tickets/TM-10001/decline", {"reason": "在处理大客户"})
        removed = await next_frame(ws, "ticket_removed")
        await post(li_na, "/api/tickets/TM-10001/decline", {"reason": "在处理大客户"})  # a retry
        _, declined = await bus.wait_for(lambda t, b: True)
    assert removed == {"type": "ticket_removed", "ticket_id": "TM-10001", "reason": "declined"}
    assert (declined["agent_id"], declined["reason"], declined["attempt"]) == ("li.na", "在处理大客户", 1)
    assert declined["event_id"] == stable_event_id("ticket_declined", "TM-10001", "li.na",
                                                   _iso_to_str(ticket["assigned_at"]), "1")
    assert len(bus.events) == 1
    assert await _worklist_ids(li_na) == []
    assert (await li_na.get("/api/tickets/TM-10001")).status == 403  # no longer theirs


def _iso_to_str(iso: str) -> str:
    from datetime import datetime
    return str(datetime.fromisoformat(iso))


async def _worklist_ids(http: aiohttp.ClientSession) -> list[str]:
    return [t["ticket_id"] for t in (await get(http, "/api/tickets"))["tickets"]]


async def test_unassigned_removes_the_ticket_and_a_later_assignment_moves_it(signed_in, publish):
    li_na, sam = await signed_in("li.na"), await signed_in("sam.taylor")
    async with li_na.ws_connect("/ws") as ws, sam.ws_connect("/ws") as sam_ws:
        await next_frame(ws, "worklist")
        await next_frame(sam_ws, "worklist")
        await offered_ticket(publish, ws)
        await publish("dispatcher", "ticket_unassigned", ticket_unassigned(reason="offer_expired"))
        removed = await next_frame(ws, "ticket_removed")
        assert removed["reason"] == "offer_expired"
        await publish("dispatcher", "ticket_assigned", offer(agent_id="sam.taylor", attempt=2))
        moved = (await next_frame(sam_ws, "ticket_assigned"))["ticket"]
    assert moved["agent_id"] == "sam.taylor" and moved["attempt"] == 2
    assert await _worklist_ids(li_na) == [] and await _worklist_ids(sam) == ["TM-10001"]


async def test_ticket_view_has_classification_sla_notes_history_and_decisions(signed_in, publish):
    li_na, sam = await signed_in("li.na"), await signed_in("sam.taylor")
    async with li_na.ws_connect("/ws") as ws:
        await next_frame(ws, "worklist")
        await publish("intake_email", "ticket_received", ticket_received("TM-09999"))  # same customer, earlier
        await publish("dispatcher", "ticket_queued", ticket_queued("TM-10001"))
        await publish("dispatcher", "ticket_classified", ticket_classified())
        await offered_ticket(publish, ws)
        await publish("sla_watcher", "sla_warning", sla_event())
        await publish("dispatcher", "ticket_transferred", ticket_transferred(outcome="rejected", detail="no one free"))
        await publish("sla_watcher", "ticket_escalated", ticket_escalated())
        await next_frame(ws, "ticket_updated")

        async def settled() -> dict | None:
            body = await get(li_na, "/api/tickets/TM-10001")
            t = body["ticket"]
            done = t["tags"] and t["sla"] and len(t["messages"]) == 2 and len(
                (await get(li_na, "/api/tickets/TM-10001/decisions"))["decisions"]) == 2 and body["history"]
            return body if done else None

        body = await wait_until(settled, message="every event reflected in the view")
    ticket = body["ticket"]
    assert (ticket["tags"], ticket["category"], ticket["signals"]) == (["invoice", "refund"], "billing", ["complaint_risk"])
    assert ticket["sla"]["first_response"]["state"] == "warning" and ticket["sla_due_at"]
    assert [m["author"] for m in ticket["messages"]] == ["system", "system"]
    assert ticket["customer"]["email"] == "zhang.wei@example.com"  # the assignee sees it in full
    assert [h["ticket_id"] for h in body["history"]] == ["TM-09999"] and "customer" not in body["history"][0]
    decisions = (await get(li_na, "/api/tickets/TM-10001/decisions"))["decisions"]
    assert [d["outcome"] for d in decisions] == ["assigned", "queued"]  # newest first
    assert decisions[0]["decision"]["candidates"][0]["agent_id"] == "li.na"
    for path in ("/api/tickets/TM-10001", "/api/tickets/TM-10001/decisions"):
        assert (await get(sam, path, status=403))["error"]["code"] == "not_assignee"


async def test_internal_notes_stay_in_the_desk(signed_in, publish, amqp_uri):
    li_na = await signed_in("li.na")
    async with li_na.ws_connect("/ws") as ws, AsyncEventListener(amqp_uri, "agent_desk") as bus:
        await next_frame(ws, "worklist")
        await offered_ticket(publish, ws)
        body = {"text": "客户上月也投诉过", "client_note_id": "note-draft-0001"}
        first = await post(li_na, "/api/tickets/TM-10001/notes", body, status=201)
        again = await post(li_na, "/api/tickets/TM-10001/notes", body, status=201)
        await post(li_na, "/api/tickets/TM-10001/notes", {"text": ""}, status=400)
        await post(li_na, "/api/tickets/TM-10001/notes", {"text": "x", "client_note_id": "bad id"}, status=400)
        await post(li_na, "/api/presence", {"presence": "away"})  # a sentinel: everything before it is on the bus
        await bus.wait_for(lambda t, b: t == "agent_presence_changed")
    assert first["note_id"] == again["note_id"]
    assert [(m["author"], m["text"]) for m in again["ticket"]["messages"]] == [("note", "客户上月也投诉过")]
    assert [t for t, _ in bus.events] == ["agent_presence_changed"]  # no event carries a note


async def test_transfer_and_reassign_emit_transfer_requests_with_role_rules(signed_in, publish, amqp_uri):
    li_na, sam, boss = await signed_in("li.na"), await signed_in("sam.taylor"), await signed_in("wang.fang")
    async with li_na.ws_connect("/ws") as ws, \
            AsyncEventListener(amqp_uri, "agent_desk", ["ticket_transfer_requested"]) as bus:
        await next_frame(ws, "worklist")
        await offered_ticket(publish, ws)
        for http, path, body, status in [
            (sam, "transfer", {"to_group": "technical", "reason": "x"}, 403),
            (li_na, "reassign", {"to_agent_id": "sam.taylor", "reason": "x"}, 403),
            (sam, "reassign", {"to_agent_id": "sam.taylor", "reason": "x"}, 403),
            (li_na, "transfer", {"to_agent_id": "nobody", "reason": "x"}, 400),
            (li_na, "transfer", {"to_group": "technical"}, 400),
            (li_na, "transfer", {"to_agent_id": "li.na", "reason": "x"}, 400),
            (boss, "reassign", {"to_group": "nope", "reason": "x"}, 400),
        ]:
            response = await http.post(f"/api/tickets/TM-10001/{path}", json=body)
            assert response.status == status, (path, body, await response.text())
            assert "error" in await response.json()
        transfer = await post(li_na, "/api/tickets/TM-10001/transfer",
                              {"to_group": "technical", "reason": "需要技术支持"}, status=202)
        reassign = await post(boss, "/api/tickets/TM-10001/reassign",
                              {"to_agent_id": "sam.taylor", "reason": "balance load"}, status=202)
        await bus.wait_for(lambda t, b: len(bus.events) == 2)
    (_, first), (_, second) = bus.events
    assert (first["kind"], first["requested_by"], first["to_group"], first["to_agent_id"]) == \
        ("transfer", "li.na", "technical", None)
    assert (second["kind"], second["requested_by"], second["to_agent_id"]) == ("reassign", "wang.fang", "sam.taylor")
    assert first["event_id"] == transfer["event_id"] and second["event_id"] == reassign["event_id"]
    assert [m["author"] for m in reassign["ticket"]["messages"]] == ["system", "system"]


async def test_agent_reopen_and_customer_reopen_emit_ticket_reopened(signed_in, publish, amqp_uri):
    li_na, sam = await signed_in("li.na"), await signed_in("sam.taylor")
    async with li_na.ws_connect("/ws") as ws, AsyncEventListener(amqp_uri, "agent_desk", ["ticket_reopened"]) as bus:
        await next_frame(ws, "worklist")
        await offered_ticket(publish, ws)
        await post(li_na, "/api/tickets/TM-10001/reopen", status=409)  # not resolved
        await post(li_na, "/api/tickets/TM-10001/accept")
        await post(li_na, "/api/tickets/TM-10001/resolve")
        await post(sam, "/api/tickets/TM-10001/reopen", status=403)
        reopened = await post(li_na, "/api/tickets/TM-10001/reopen")
        assert reopened["ticket"]["status"] == "reopened"
        _, by_agent = await bus.wait_for(lambda t, b: b["by"] == "agent")
        assert await _worklist_ids(li_na) == ["TM-10001"]
        await post(li_na, "/api/tickets/TM-10001/resolve")
        await publish("intake_email", "message_received", message_received(message_id="m-again"))
        _, by_customer = await bus.wait_for(lambda t, b: b["by"] == "customer")
    assert (by_agent["agent_id"], by_agent["channel"]) == ("li.na", "email")
    assert (by_customer["agent_id"], by_customer["channel"]) == ("li.na", "email")


async def test_api_tokens_authenticate_scripts_and_are_stored_hashed(signed_in, base_url, redis_client):
    li_na = await signed_in("li.na")
    created = await post(li_na, "/api/tokens", {"label": "report script"}, status=201)
    token = created["token"]
    assert token.startswith("tmd_")
    assert not [k for k in redis_client.scan_iter("tm:agent_desk:*") if token in k or token in str(redis_client.dump(k))]
    async with aiohttp.ClientSession(base_url) as script:
        me = await script.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status == 200 and (await me.json())["agent_id"] == "li.na"
        board = await script.get("/api/supervisor/overview", headers={"Authorization": f"Bearer {token}"})
        assert board.status == 403 and (await board.json())["error"]["code"] == "not_supervisor"
        minted = await script.post("/api/tokens", json={}, headers={"Authorization": f"Bearer {token}"})
        assert minted.status == 403  # a token cannot mint tokens
        for bad in ("Bearer tmd_wrong", "Bearer", "Basic abc", f"Bearer {token}x"):
            response = await script.get("/api/me", headers={"Authorization": bad})
            assert response.status == 401 and (await response.json())["error"]["code"] == "invalid_token"
        listed = await get(li_na, "/api/tokens")
        assert [t["label"] for t in listed["tokens"]] == ["report script"] and token not in str(listed)
        assert set(listed["tokens"][0]) == {"token_id", "label", "created_at", "expires_at"}
        assert (await li_na.delete(f"/api/tokens/{created['token_id']}")).status == 200
        assert (await li_na.delete(f"/api/tokens/{created['token_id']}")).status == 404
        revoked = await script.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        assert revoked.status == 401


async def test_supervisor_overview_shows_queues_agents_risk_and_decisions(signed_in, publish):
    li_na, boss = await signed_in("li.na"), await signed_in("wang.fang")
    assert (await get(li_na, "/api/supervisor/overview", status=403))["error"]["code"] == "not_supervisor"
    async with li_na.ws_connect("/ws") as ws, boss.ws_connect("/ws") as boss_ws:
        await next_frame(ws, "worklist")
        await next_frame(boss_ws, "worklist")
        await post(li_na, "/api/presence", {"presence": "online"})
        await offered_ticket(publish, ws)
        await publish("intake_email", "ticket_received", ticket_received("TM-20001"))
        await publish("dispatcher", "ticket_queued", ticket_queued("TM-20001", skills=("technical",), priority="P1"))
        await publish("sla_watcher", "sla_breached", sla_event(breached=True, due_in=-5))
        hint = await next_frame(boss_ws, "board_changed")
        assert hint["event"]

        async def settled() -> dict | None:
            board = await get(boss, "/api/supervisor/overview")
            return board if board["queues"] and board["sla_risk"] and len(board["decisions"]) == 2 else None

        board = await wait_until(settled, message="supervisor board filled")
    (queue,) = board["queues"]
    assert (queue["skill"], queue["count"], queue["by_priority"]) == ("technical", 1, {"P1": 1})
    agents = {a["agent_id"]: a for a in board["agents"]}
    assert (agents["li.na"]["presence"], agents["li.na"]["load"], agents["li.na"]["offers"]) == ("online", {"email": 1}, 1)
    assert agents["sam.taylor"]["presence"] == "offline"
    assert [(r["ticket_id"], r["sla_state"]) for r in board["sla_risk"]] == [("TM-10001", "breached")]
    assert {d["outcome"] for d in board["decisions"]} == {"assigned", "queued"}


async def test_heartbeat_loss_is_announced_offline_once_with_two_replicas(start_desk, amqp_uri):
    replicas = [await start_desk(f"desk-{n}", TM_DESK_PRESENCE_GRACE_SECONDS="0.6") for n in (1, 2)]
    first = replicas[0]
    async with aiohttp.ClientSession(f"http://127.0.0.1:{first.port}", cookie_jar=aiohttp.CookieJar(unsafe=True)) as li_na, \
            AsyncEventListener(amqp_uri, "agent_desk", ["agent_presence_changed"]) as bus:
        await post(li_na, "/api/login", {"agent_id": "li.na", "password": PASSWORDS["li.na"]})
        async with li_na.ws_connect("/ws") as ws:
            await next_frame(ws, "worklist")
            await post(li_na, "/api/presence", {"presence": "online"})
            # While the socket lives, sweeps on both replicas keep the agent online.
            ticks = [r.app[DESK_KEY].presence_ticks for r in replicas]
            await wait_until(lambda: all(r.app[DESK_KEY].presence_ticks > t + 6 for r, t in zip(replicas, ticks)),
                             message="several sweeps with the socket open")
            assert [b["presence"] for _, b in bus.events] == ["online"]
        _, offline = await bus.wait_for(lambda t, b: b["presence"] == "offline")
        ticks = [r.app[DESK_KEY].presence_ticks for r in replicas]
        await wait_until(lambda: all(r.app[DESK_KEY].presence_ticks > t + 4 for r, t in zip(replicas, ticks)),
                         message="more sweeps on both replicas after the announcement")
        me = await get(li_na, "/api/me")
    assert [b["presence"] for _, b in bus.events] == ["online", "offline"]
    assert offline["agent_id"] == "li.na" and me["presence"] == "offline"


async def test_a_reassigned_ticket_reaches_its_new_agent_with_the_transfer_note_whichever_handler_runs_first(
        desk, signed_in):
    """The dispatcher announces ticket_transferred, then ticket_assigned; their store and push
    handlers run on separate queues. Here the transfer's push runs while the ticket is still
    queued and the assignment's push before the transfer's store: the note must still arrive."""
    from shared import events as ev

    app_desk = desk.app[DESK_KEY]
    li_na = await signed_in("li.na")
    async with li_na.ws_connect("/ws") as ws:
        await next_frame(ws, "worklist")
        await app_desk.store_ticket_received(ev.parse_event("intake_email", "ticket_received", ticket_received()))
        await app_desk.store_ticket_queued(ev.parse_event("dispatcher", "ticket_queued", ticket_queued()))
        transferred = ev.parse_event("dispatcher", "ticket_transferred", ticket_transferred(
            requested_by="wang.fang", kind="reassign", from_agent_id=None, to_agent_id="li.na", reason="speaks English"))
        await app_desk.push_system_note(transferred)
        await app_desk.push_ticket_assigned(ev.parse_event("dispatcher", "ticket_assigned", offer()))
        pushed = (await next_frame(ws, "ticket_assigned"))["ticket"]
    assert any(m["author"] == "system" and m["text"].startswith("Reassigned to li.na by wang.fang")
               for m in pushed["messages"]), pushed["messages"]


async def test_consoles_close_on_every_replica_when_their_session_or_token_ends(start_desk):
    replicas = [await start_desk(f"desk-{n}", TM_DESK_PRESENCE_GRACE_SECONDS="0.6") for n in (1, 2)]
    urls = [f"http://127.0.0.1:{r.port}" for r in replicas]
    async with aiohttp.ClientSession(urls[0], cookie_jar=aiohttp.CookieJar(unsafe=True)) as li_na:
        await post(li_na, "/api/login", {"agent_id": "li.na", "password": PASSWORDS["li.na"]})
        token = await post(li_na, "/api/tokens", {"label": "script"}, status=201)
        bearer = {"Authorization": f"Bearer {token['token']}"}
        session_cookie = {"Cookie": f"tm_desk_session={li_na.cookie_jar.filter_cookies(urls[0])['tm_desk_session'].value}"}
        async with aiohttp.ClientSession(urls[1]) as other:
            # Both sockets live on replica 2; the session ends and the token is revoked on replica 1.
            async with other.ws_connect("/ws", headers=session_cookie) as by_session, \
                    other.ws_connect("/ws", headers=bearer) as by_token:
                await next_frame(by_session, "worklist")
                await next_frame(by_token, "worklist")
                await post(li_na, "/api/logout", {})
                closed = await asyncio.wait_for(by_session.receive(), 10)
                assert (closed.type, by_session.close_code) == (aiohttp.WSMsgType.CLOSE, 4401)
                assert not by_token.closed  # a token outlives the console session that made it
                async with aiohttp.ClientSession(urls[0], cookie_jar=aiohttp.CookieJar(unsafe=True)) as again:
                    await post(again, "/api/login", {"agent_id": "li.na", "password": PASSWORDS["li.na"]})
                    assert (await again.delete(f"/api/tokens/{token['token_id']}")).status == 200
                closed = await asyncio.wait_for(by_token.receive(), 10)
                assert (closed.type, by_token.close_code) == (aiohttp.WSMsgType.CLOSE, 4401)
