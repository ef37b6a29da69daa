"""Group chat robots end to end: the notifier posts to a real local HTTP server that plays
DingTalk, Feishu, WeCom and a Slack-style hook and checks each signature the way the vendor
documents it (re-implemented here, independently of services/notifier/webhooks.py), answering
as the vendor would. Real RabbitMQ vhost, Redis and SMTP sink around it.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from services.notifier.tests.factories import sla_breached
from services.notifier.tests.update_factories import ticket_escalated
from shared.testing.asyncio_helpers import free_port, wait_until
from shared.testing.plugin import dead_letters

from .update_fixtures import make_notifier  # noqa: F401

DING_TOKEN, DING_SECRET = "ding-access-token", "SECding0123456789"
FEISHU_HOOK, FEISHU_SECRET = "3f1c-hook-id", "feishu-sign-secret"
WECOM_KEY = "693a91f6-wecom-key"
SLACK_PATH, SLACK_SECRET = "/services/T000/B000/XXXX", "relay-secret"
MAX_SKEW_SECONDS = 3600  # DingTalk and Feishu refuse a timestamp more than an hour off


@dataclass
class VendorServer:
    """Plays the four vendors. ``received`` holds (vendor, JSON body) of every accepted post."""

    port: int
    received: list[tuple[str, dict]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    slack_failures_left: int = 0
    runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def of(self, vendor: str) -> list[dict]:
        return [body for v, body in self.received if v == vendor]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/robot/send", self.dingtalk)
        app.router.add_post(f"/open-apis/bot/v2/hook/{FEISHU_HOOK}", self.feishu)
        app.router.add_post("/cgi-bin/webhook/send", self.wecom)
        app.router.add_post(SLACK_PATH, self.slack)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def _refuse(self, vendor: str, why: str) -> None:
        self.refused.append((vendor, why))

    async def dingtalk(self, request: web.Request) -> web.Response:
        # access_token, timestamp (ms) and sign in the query; sign = urlEncode(Base64(HmacSHA256(
        # key=secret, "timestamp\nsecret"))). aiohttp's request.query is already URL-decoded.
        q = request.query
        if q.get("access_token") != DING_TOKEN:
            return web.json_response({"errcode": 300001, "errmsg": "token is not exist"})
        timestamp = q.get("timestamp", "")
        expected = base64.b64encode(hmac.new(DING_SECRET.encode(), f"{timestamp}\n{DING_SECRET}".encode(),
                                             hashlib.sha256).digest()).decode()
        if not timestamp.isdigit() or abs(int(timestamp) / 1000 - time.time()) > MAX_SKEW_SECONDS \
                or not hmac.compare_digest(q.get("sign", ""), expected):
            self._refuse("dingtalk", "sign")
            return web.json_response({"errcode": 310000, "errmsg": "sign not match"})
        self.received.append(("dingtalk", await request.json()))
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def feishu(self, request: web.Request) -> web.Response:
        # timestamp (s) and sign in the body; sign = Base64(HmacSHA256(key="timestamp\nsecret", "")).
        body = await request.json()
        timestamp = str(body.get("timestamp", ""))
        expected = base64.b64encode(hmac.new(f"{timestamp}\n{FEISHU_SECRET}".encode(), b"",
                                             hashlib.sha256).digest()).decode()
        if not timestamp.isdigit() or abs(int(timestamp) - time.time()) > MAX_SKEW_SECONDS \
                or not hmac.compare_digest(str(body.get("sign", "")), expected):
            self._refuse("feishu", "sign")
            return web.json_response({"code": 19021, "data": {}, "msg": "sign match fail or timestamp is not within "
                                      "one hour from current time"})
        self.received.append(("feishu", body))
        return web.json_response({"code": 0, "data": {}, "msg": "success"})

    async def wecom(self, request: web.Request) -> web.Response:
        if request.query.get("key") != WECOM_KEY:
            self._refuse("wecom", "key")
            return web.json_response({"errcode": 93000, "errmsg": "invalid webhook url"})
        self.received.append(("wecom", await request.json()))
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def slack(self, request: web.Request) -> web.Response:
        if self.slack_failures_left > 0:
            self.slack_failures_left -= 1
            return web.Response(status=503, text="service unavailable")
        raw = await request.read()
        timestamp = request.headers.get("X-Ticketmesh-Request-Timestamp", "")
        mac = hmac.new(SLACK_SECRET.encode(), b"v1:" + timestamp.encode() + b":" + raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get("X-Ticketmesh-Signature", ""), f"v1={mac}"):
            self._refuse("slack", "signature")
            return web.Response(status=403, text="invalid_signature")
        self.received.append(("slack", json.loads(raw)))
        return web.Response(text="ok")


@pytest.fixture
async def vendors():
    server = VendorServer(free_port())
    await server.start()
    yield server
    await server.stop()


CONFIG = """
robots:
  - name: duty-dingtalk
    kind: dingtalk
    url_env: T_DING_URL
    secret_env: T_DING_SECRET
    events: [sla_breached, "ticket_escalated:notify_duty_manager"]
  - name: team-feishu
    kind: feishu
    url_env: T_FEISHU_URL
    secret_env: T_FEISHU_SECRET
    events: [ticket_escalated]
  - name: ops-wecom
    kind: wecom
    url_env: T_WECOM_URL
    events: ["ticket_escalated:notify_duty_manager"]
  - name: intl-slack
    kind: slack
    url_env: T_SLACK_URL
    secret_env: T_SLACK_SECRET
    language: en
    events: ["ticket_escalated:notify_duty_manager", sla_breached]
"""


def _environ(vendors: VendorServer, **override: str) -> dict[str, str]:
    return {
        "T_DING_URL": vendors.url(f"/robot/send?access_token={DING_TOKEN}"), "T_DING_SECRET": DING_SECRET,
        "T_FEISHU_URL": vendors.url(f"/open-apis/bot/v2/hook/{FEISHU_HOOK}"), "T_FEISHU_SECRET": FEISHU_SECRET,
        "T_WECOM_URL": vendors.url(f"/cgi-bin/webhook/send?key={WECOM_KEY}"),
        "T_SLACK_URL": vendors.url(SLACK_PATH), "T_SLACK_SECRET": SLACK_SECRET, **override,
    }


async def _start(make_notifier, tmp_path, environ: dict[str, str]):
    config = tmp_path / "notify.yaml"
    config.write_text(CONFIG)
    # The real clock: the robots sign with the time, and the vendors check it against theirs.
    return await make_notifier(None, environ=environ, TM_NOTIFY_CONFIG_FILE=str(config))


async def test_each_robot_gets_the_escalations_it_asked_for_signed_as_its_vendor_checks(
        sink, make_notifier, publish, vendors, tmp_path):
    await sink.start()
    await _start(make_notifier, tmp_path, _environ(vendors))
    body = ticket_escalated("TM-40001", "notify_duty_manager", level=2)
    await publish("sla_watcher", "ticket_escalated", body)
    await wait_until(lambda: len(vendors.received) == 4, message="all four robots")
    assert vendors.refused == []
    ding = vendors.of("dingtalk")[0]["markdown"]
    assert ding["title"] == "工单升级（第 2 级）：TM-40001" and "动作：通知值班经理" in ding["text"]
    assert vendors.of("feishu")[0]["content"]["text"].startswith("工单升级（第 2 级）：TM-40001\n")
    assert vendors.of("wecom")[0]["markdown"]["content"].startswith("**工单升级（第 2 级）：TM-40001**")
    assert vendors.of("slack")[0]["text"].startswith("*Escalation (level 2): ticket TM-40001*\nAction: notify the duty")

    # Redelivered (same event id): nothing is posted twice. A notify_supervisor step goes only
    # to the robot that wants every escalation; the sentinel after it proves both were handled.
    await publish("sla_watcher", "ticket_escalated", body)
    await publish("sla_watcher", "ticket_escalated", ticket_escalated("TM-40002", "notify_supervisor"))
    await wait_until(lambda: len(vendors.of("feishu")) == 2, message="feishu sentinel")
    assert [len(vendors.of(v)) for v in ("dingtalk", "feishu", "wecom", "slack")] == [1, 2, 1, 1]

    await publish("sla_watcher", "sla_breached", sla_breached("TM-40003"))
    await wait_until(lambda: len(vendors.of("slack")) == 2, message="breach to slack")
    await wait_until(lambda: len(vendors.of("dingtalk")) == 2, message="breach to dingtalk")
    assert vendors.of("slack")[1]["text"].startswith("*SLA breached: ticket TM-40003*")


async def test_a_robot_that_is_down_is_retried_and_one_that_refuses_dead_letters_the_event(
        sink, make_notifier, publish, vendors, tmp_path, amqp_uri):
    await sink.start()
    # The Feishu secret is wrong: Feishu answers "sign match fail" however often we try.
    await _start(make_notifier, tmp_path, _environ(vendors, T_FEISHU_SECRET="not-the-secret"))
    vendors.slack_failures_left = 1  # Slack is away once: the event comes back and Slack gets it
    await publish("sla_watcher", "ticket_escalated", ticket_escalated("TM-40010", "notify_duty_manager"))
    letters = await asyncio.to_thread(dead_letters, amqp_uri, 15.0, 1)
    assert len(letters) == 1
    headers, raw = letters[0]
    assert "team-feishu" in headers["x-tm-dead-reason"] and "19021" in headers["x-tm-dead-reason"]
    assert b"TM-40010" in raw
    assert "not-the-secret" not in headers["x-tm-dead-reason"]
    # Every robot that could take it has it exactly once, Slack after its retry.
    assert sorted(v for v, _ in vendors.received) == ["dingtalk", "slack", "wecom"]
    assert ("feishu", "sign") in vendors.refused
