import json
from datetime import datetime, timezone

import aio_pika
import aiohttp
import pytest

from shared import events as ev

from pathlib import Path

from services.intake_chat.config import Settings
from services.intake_chat.identity import session_visitor_id
from services.intake_chat.service import make_service

pytest_plugins = ["shared.testing.plugin"]

REPO = Path(__file__).resolve().parents[3]
SLA_FILE = str(REPO / "deploy" / "config" / "sla.yaml")
VISITOR = "v_test0123456789abcdef"  # the session secret a widget would keep
VISITOR_ID = session_visitor_id(VISITOR)  # the visitor id the service derives from it
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

    async def publish_agent_reply(self, ticket_id, text, *, reply_id="r-1", channel="chat", visitor_id=VISITOR_ID):
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


def chat_env(amqp_uri, redis_url, tmp_path, **extra):
    roster = tmp_path / "roster.yaml"
    roster.write_text(ROSTER, encoding="utf-8")
    return {
        "TM_AMQP_URI": amqp_uri, "TM_REDIS_URL": redis_url, "TM_CHAT_PORT": "0", "TM_ROSTER_FILE": str(roster),
        "TM_REPLICA_ID": "chat-test", "TM_SLA_POLICY_FILE": SLA_FILE, "TM_DATA_DIR": str(tmp_path / "data"),
        "TM_CHAT_QUEUE_REFRESH_SECONDS": "0.1", "TM_CHAT_SWEEP_SECONDS": "0.05", **extra,
    }


@pytest.fixture
def chat_settings_env():
    """Extra variables for ``chat_app`` (a test overrides this fixture to change them)."""
    return {}


@pytest.fixture
async def chat_app(amqp_uri, redis_url, tmp_path, chat_settings_env):
    settings = Settings.from_env(chat_env(amqp_uri, redis_url, tmp_path, **chat_settings_env))
    service = make_service(settings)
    await service.start()
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{service.port}") as http:
        yield ChatApp(service, http, amqp_uri)
    await service.stop()


