import json
from datetime import datetime, timezone

import aio_pika
import aiohttp
import pytest

from shared import events as ev

from services.intake_chat.config import Settings
from services.intake_chat.service import make_service

pytest_plugins = ["shared.testing.plugin"]

VISITOR = "v_test0123456789abcdef"
ROSTER = """
agents:
  - agent_id: li.na
    name: 李娜
    password_hash: scrypt$16384$8$1$00$00
"""


class ChatApp:
    def __init__(self, service, http, amqp_uri):
        self.service = service
        self.http = http
        self.amqp_uri = amqp_uri

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.service.port}"

    async def post(self, payload=None, *, data=None, headers=None):
        kwargs = {"json": payload} if data is None else {"data": data}
        async with self.http.post("/api/chat/messages", headers=headers, **kwargs) as resp:
            return resp.status, await resp.json()

    async def publish_agent_reply(self, ticket_id, text, *, reply_id="r-1", channel="chat", visitor_id=VISITOR):
        body = ev.make_event(ev.AGENT_DESK, ev.AGENT_REPLIED, now=datetime.now(timezone.utc), trace_id="trace-desk",
                             ticket_id=ticket_id, agent_id="li.na", channel=channel, text=text, reply_id=reply_id,
                             customer={"name": "", "chat_visitor_id": visitor_id})
        await self.publish(ev.AGENT_DESK, ev.AGENT_REPLIED, body)

    async def publish(self, source, event_type, body):
        async with await aio_pika.connect(self.amqp_uri) as conn:
            channel = await conn.channel(publisher_confirms=True)
            exchange = await channel.declare_exchange(ev.exchange_name(source), aio_pika.ExchangeType.TOPIC, durable=True)
            await exchange.publish(aio_pika.Message(json.dumps(body).encode(), content_type="application/json"),
                                   routing_key=event_type)


@pytest.fixture
async def chat_app(amqp_uri, redis_url, tmp_path):
    roster = tmp_path / "roster.yaml"
    roster.write_text(ROSTER, encoding="utf-8")
    settings = Settings.from_env({
        "TM_AMQP_URI": amqp_uri, "TM_REDIS_URL": redis_url, "TM_CHAT_PORT": "0", "TM_ROSTER_FILE": str(roster),
        "TM_REPLICA_ID": "chat-test",
    })
    service = make_service(settings)
    await service.start()
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{service.port}") as http:
        yield ChatApp(service, http, amqp_uri)
    await service.stop()
