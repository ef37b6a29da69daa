"""Waiting customers see their place and expected wait from the dispatcher's live queue.

The dispatcher's state is written here through the dispatcher's own store (the only writer of
those keys), and read back through shared.dispatch_view: a change of the dispatcher's key layout
fails these tests rather than silently showing customers a wrong place.
"""
from datetime import datetime, timedelta, timezone

import pytest
import redis.asyncio

from services.dispatcher.store import DispatchStore, TicketFacts
from shared import dispatch_view
from shared.roster import AgentProfile, hash_password
from shared.sla_policy import expected_first_response, load_policies

from services.intake_chat.service import WAITING_KEY
from services.intake_chat.tests.conftest import SLA_FILE
from services.intake_chat.tests.service.test_chat_socket import open_chat, receive

PASSWORD_HASH = hash_password("secret-password", salt=b"queue-test-salt!")
NOW = datetime.now(timezone.utc)


@pytest.fixture
def dispatcher(redis_client):
    return DispatchStore(redis_client)


def roster(store, chat_capacity=(("li.na", 2), ("zhao.lei", 1)), online=("li.na", "zhao.lei")):
    store.load_roster([AgentProfile(agent_id=a, name=a, password_hash=PASSWORD_HASH, capacity={"chat": c, "email": 5})
                       for a, c in chat_capacity] +
                      [AgentProfile(agent_id="mail.only", name="m", password_hash=PASSWORD_HASH, capacity={"email": 9})])
    for agent in (*online, "mail.only"):
        store.set_presence(agent, "online", at=NOW.timestamp())


def queue(store, ticket_id, minutes_ago, priority="P3"):
    received = NOW - timedelta(minutes=minutes_ago)
    facts = TicketFacts(ticket_id=ticket_id, trace_id="t-" + ticket_id, channel="chat", priority=priority,
                        required_skills=("general",), language="zh", tags=(), received_at=received,
                        sla_due_at=(received + timedelta(minutes=10)).timestamp())
    with store.routing(facts):
        pass
    store.enqueue(facts, now=NOW.timestamp())


@pytest.fixture
async def async_redis(redis_url):
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def test_the_view_reads_place_state_and_seats_as_the_dispatcher_wrote_them(dispatcher, async_redis):
    roster(dispatcher)
    for i, ticket_id in enumerate(("T-1", "T-2", "T-3")):
        queue(dispatcher, ticket_id, minutes_ago=9 - i)
    queue(dispatcher, "T-0", minutes_ago=20)
    assert dispatcher.claim("T-0", "li.na", "chat", now=NOW.timestamp(), decision={}).assigned
    views = await dispatch_view.routing_views(async_redis, ["T-1", "T-3", "T-0", "T-unknown"])
    assert (views["T-1"].state, views["T-1"].position, views["T-1"].queue_length) == ("queued", 1, 3)
    assert (views["T-3"].position, views["T-3"].priority) == (3, "P3")
    assert (views["T-0"].state, views["T-0"].agent_id, views["T-0"].position) == ("assigned", "li.na", None)
    assert views["T-unknown"].state is None
    assert views["T-1"].received_at == NOW - timedelta(minutes=9)
    seats = await dispatch_view.channel_seats(async_redis, "chat")
    assert seats == dispatch_view.ChannelSeats(agents_online=2, seats=3, free=2)


async def test_a_waiting_customer_sees_no_agents_then_their_place_then_who_joined(chat_app, dispatcher):
    ws, welcome = await open_chat(chat_app)
    assert welcome["agents_online"] == 0
    await ws.send_json({"type": "message", "client_message_id": "m-1", "text": "在吗？"})
    ticket = (await receive(ws, "ack"))["ticket_id"]
    frame = await receive(ws, "queue")
    assert frame["state"] == "no_agents" and frame["agents_online"] == 0

    roster(dispatcher)
    queue(dispatcher, "TM-5001", minutes_ago=8)
    queue(dispatcher, "TM-5002", minutes_ago=6)
    queue(dispatcher, ticket, minutes_ago=0)
    while (frame := await receive(ws, "queue"))["state"] != "waiting":
        pass
    respond_by = expected_first_response(load_policies(SLA_FILE), priority="P3", channel="chat",
                                         received_at=NOW, customer_tier="standard")
    assert frame["position"] == 3 and frame["agents_online"] == 2
    assert frame["expected_wait_seconds"] == 300  # 3 in line × 300 s ÷ 3 chat seats
    assert frame["respond_by"] == respond_by.isoformat() and not frame["at_risk"]

    assert dispatcher.claim(ticket, "li.na", "chat", now=NOW.timestamp(), decision={}).assigned
    while (frame := await receive(ws, "queue"))["state"] != "assigned":
        pass
    assert frame["agent_name"] == "李娜"
    # the agent's first reply ends the waiting: no more queue frames for this ticket
    await chat_app.publish_agent_reply(ticket, "您好！", reply_id="r-1")
    await receive(ws, "agent_message")
    assert ticket not in chat_app.service.app[WAITING_KEY].watched()
    await ws.close()
