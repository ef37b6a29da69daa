"""Fixtures for the customer pages' tests: intake_chat on the real brokers, with a known link
secret, and helpers that publish the mesh's events the way their producers do.

Test modules import ``pages_app`` from here (pytest finds fixtures in a module's namespace).
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp
import pytest

from shared import customer_links
from shared import events as ev
from shared.testing.asyncio_helpers import wait_until

from services.intake_chat.config import Settings
from services.intake_chat.customer_pages import PAGES_KEY
from services.intake_chat.service import make_service

LINK_SECRET = "service-test-customer-link-secret"
ROSTER = """
agents:
  - agent_id: li.na
    name: 李娜
    password_hash: scrypt$16384$8$1$00$00
"""
TRACE = "trace-customer-pages"


def now() -> datetime:
    return datetime.now(timezone.utc)


class PagesApp:
    def __init__(self, service: Any, http: aiohttp.ClientSession, publish_event: Any):
        self.service = service
        self.http = http
        self._publish = publish_event

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.service.port}"

    @property
    def pages(self) -> Any:
        return self.service.app[PAGES_KEY]

    # --- links -------------------------------------------------------------------------------

    @staticmethod
    def token(ticket_id: str, purpose: str = "status", *, secret: str = LINK_SECRET, at: datetime | None = None,
              ttl_seconds: int | None = None) -> str:
        return customer_links.make_token(secret.encode(), ticket_id, purpose, now=at or now(), ttl_seconds=ttl_seconds)

    def status_path(self, ticket_id: str) -> str:
        return f"/status/{self.token(ticket_id)}"

    def csat_path(self, ticket_id: str) -> str:
        return f"/csat/{self.token(ticket_id, 'csat')}"

    # --- events as their producers publish them --------------------------------------------------

    async def publish(self, source: str, event_type: str, ticket_id: str, *, at: datetime | None = None,
                      **fields: Any) -> dict:
        body = ev.make_event(source, event_type, now=at or now(), trace_id=TRACE, ticket_id=ticket_id, **fields)
        await self._publish(source, event_type, body)
        return body

    async def ticket_received(self, ticket_id: str, *, channel: str = "email", subject: str = "Parcel late",
                              text: str = "Where is my parcel?", **customer: Any) -> dict:
        source = {"email": ev.INTAKE_EMAIL, "chat": ev.INTAKE_CHAT, "phone": ev.INTAKE_PHONE}[channel]
        who = {"name": "Ann Lee", "email": "ann@example.com", "language": "en", **customer}
        return await self.publish(source, ev.TICKET_RECEIVED, ticket_id, channel=channel, customer=who,
                                  subject=subject, text=text, received_at=now())

    async def agent_replied(self, ticket_id: str, text: str, *, reply_id: str = "r-1", channel: str = "email") -> dict:
        return await self.publish(ev.AGENT_DESK, ev.AGENT_REPLIED, ticket_id, agent_id="li.na", channel=channel,
                                  text=text, reply_id=reply_id, customer={"name": "Ann Lee"})

    async def resolved(self, ticket_id: str, resolution: str = "solved", *, channel: str = "email") -> dict:
        return await self.publish(ev.AGENT_DESK, ev.TICKET_RESOLVED, ticket_id, agent_id="li.na", channel=channel,
                                  resolution=resolution)

    async def status_changed(self, ticket_id: str, status: str) -> dict:
        return await self.publish(ev.AGENT_DESK, ev.TICKET_STATUS_CHANGED, ticket_id, status=status,
                                  paused=status != "open", agent_id="li.na")

    async def clock(self, ticket_id: str, name: str, change: str, due_at: datetime | None) -> dict:
        return await self.publish(ev.SLA_WATCHER, ev.SLA_CLOCK_CHANGED, ticket_id, clock=name, change=change,
                                  policy="standard", target_seconds=3600, due_at=due_at)

    async def attached(self, ticket_id: str, into_ticket_id: str, text: str, *, channel: str = "chat") -> dict:
        return await self.publish(ev.DISPATCHER, ev.TICKET_ATTACHED, ticket_id, into_ticket_id=into_ticket_id,
                                  channel=channel, customer={"name": "Ann Lee"}, text=text, received_at=now())

    async def accepted(self, ticket_id: str) -> dict:
        return await self.publish(ev.AGENT_DESK, ev.TICKET_ACCEPTED, ticket_id, agent_id="li.na")

    # --- reading ------------------------------------------------------------------------------

    async def view(self, ticket_id: str, lang: str = "en") -> tuple[int, dict]:
        async with self.http.get(f"{self.status_path(ticket_id)}/view?lang={lang}") as resp:
            return resp.status, await resp.json()

    async def wait_view(self, ticket_id: str, predicate: Any, what: str = "the status view") -> dict:
        """The ticket's public view once ``predicate(view)`` holds (events are consumed async)."""
        async def shown() -> dict | None:
            status, body = await self.view(ticket_id)
            return body if status == 200 and predicate(body) else None

        return await wait_until(shown, 10, what)

    async def stored_ticket(self, ticket_id: str, **customer: Any) -> dict:
        """Publish ``ticket_received`` and wait until the page knows the ticket."""
        await self.ticket_received(ticket_id, **customer)
        return await self.wait_view(ticket_id, lambda v: v["known"], f"{ticket_id} projected")


@pytest.fixture
async def pages_app(amqp_uri, redis_url, tmp_path, publish_event):
    roster = tmp_path / "roster.yaml"
    roster.write_text(ROSTER, encoding="utf-8")
    settings = Settings.from_env({
        "TM_AMQP_URI": amqp_uri, "TM_REDIS_URL": redis_url, "TM_CHAT_PORT": "0", "TM_ROSTER_FILE": str(roster),
        "TM_REPLICA_ID": "pages-test", "TM_CUSTOMER_LINK_SECRET": LINK_SECRET,
        "TM_CHAT_CLIENT_IP_HEADER": "X-Forwarded-For",
    })
    service = make_service(settings)
    await service.start()
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{service.port}") as http:
        yield PagesApp(service, http, publish_event)
    await service.stop()


async def read_sse_view(response: aiohttp.ClientResponse, timeout: float = 10.0) -> dict:
    """The next ``view`` event of a status stream (keep-alive comments skipped)."""
    import asyncio

    async def next_view() -> dict:
        while True:
            block = (await response.content.readuntil(b"\n\n")).decode()
            lines = block.strip().split("\n")
            if "event: view" in lines:
                data = "".join(line[len("data: "):] for line in lines if line.startswith("data: "))
                return json.loads(data)

    return await asyncio.wait_for(next_view(), timeout)


def expired_token(ticket_id: str, purpose: str = "status") -> str:
    return PagesApp.token(ticket_id, purpose, at=now() - timedelta(days=100), ttl_seconds=60)
