"""The demo's routing (``./dev up``): its rules file is the shipped one with a policy for people
watching, and its traffic reaches a lone online agent on every channel."""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from playwright.async_api import expect

from devenv.config import REPO_ROOT, DevSettings
from devenv.demo import CALLS, CHATS, DEMO_FILES, DEMO_PASSWORDS, EMAILS, demo_files, post_chat, send_email, \
    send_missed_call
from devenv.mesh import Mesh, isolated_env
from services.dispatcher.policy import load_policy
from shared.config_files import read_yaml
from shared.sla_policy import load_policies, select_policy
from shared.testing.browser import chromium
from shared.testing.plugin import AsyncEventListener

SHIPPED_RULES = REPO_ROOT / "deploy/config/routing.yaml"
DEMO_RULES = REPO_ROOT / DEMO_FILES["TM_ROUTING_RULES_FILE"]
EVENT_TIMEOUT = 15.0


def test_the_demo_classifies_with_the_shipped_rules():
    shipped, demo = read_yaml(SHIPPED_RULES, "shipped rules"), read_yaml(DEMO_RULES, "demo rules")
    assert {k: v for k, v in demo.items() if k != "routing"} == {k: v for k, v in shipped.items() if k != "routing"}, \
        "deploy/demo/routing.yaml must keep deploy/config/routing.yaml's rules: copy them over"


def test_the_demo_policy_lets_one_agent_see_every_channel_and_breaches_escalate_before_widening():
    policy = load_policy(DEMO_RULES)
    assert policy.name == "demo" and policy.capacity_model == "per_channel"
    assert policy.offers and policy.decline_cooldown_seconds <= 60
    # The English technical demo email has no L1 agent: its breach must come before widen_group
    # (which would hand it to li.na a moment before the escalation takes it away again).
    sla = load_policies(REPO_ROOT / DEMO_FILES["TM_SLA_POLICY_FILE"])
    email_target = select_policy(sla, priority="P3", channel="email", customer_tier="standard").first_response_seconds
    widen = next(step.after_seconds for step in policy.relaxation if step.step == "widen_group")
    assert email_target < widen


def test_dev_up_runs_on_the_demo_files_unless_told_otherwise():
    settings = DevSettings.from_env({})
    assert demo_files(settings, {}) == {"TM_SLA_POLICY_FILE": str(REPO_ROOT / "deploy/demo/sla.yaml"),
                                        "TM_ROUTING_RULES_FILE": str(DEMO_RULES)}
    mine = demo_files(settings, {"TM_ROUTING_RULES_FILE": "/etc/mine.yaml"})
    assert mine["TM_ROUTING_RULES_FILE"] == "/etc/mine.yaml"


async def test_demo_traffic_reaches_a_lone_agent_on_all_three_channels(amqp_uri, redis_url, tmp_path, dovecot,
                                                                        sink_settings):
    """A newcomer signs in as li.na, accepts the first email and chat; the missed call after them
    is still offered to her (with the shipped shared budget it would wait for a free agent)."""
    env = isolated_env(amqp_uri=amqp_uri, redis_url=redis_url, work_dir=tmp_path, imap_port=dovecot.port,
                       smtp_port=sink_settings.smtp_port, **demo_files(DevSettings.from_env({}), {}))
    settings = DevSettings.from_env(env)
    mesh = Mesh(env, tmp_path / "log")
    await asyncio.to_thread(mesh.start)
    try:
        async with AsyncEventListener(amqp_uri, "dispatcher", ["ticket_assigned", "ticket_queued"]) as routed, \
                AsyncEventListener(amqp_uri, "intake_email", ["ticket_received"]) as email_in, \
                AsyncEventListener(amqp_uri, "intake_phone", ["ticket_received"]) as phone_in, \
                chromium() as browser:
            context = await browser.new_context(locale="zh-CN")
            console = await context.new_page()
            desk = mesh.url("agent_desk")
            await console.goto(desk + "/")
            await console.fill("#login-agent", "li.na")
            await console.fill("#login-password", DEMO_PASSWORDS["li.na"])
            await console.click("#login-submit")
            await expect(console.locator("#worklist")).to_have_attribute("data-loaded", "true")
            await console.click('#presence button[data-presence="online"]')
            await expect(console.locator('#presence button[data-presence="online"]')).to_have_attribute(
                "aria-pressed", "true")
            # The banner's tip: the same console at localhost has its own cookies (a second agent).
            second = await context.new_page()
            await second.goto(desk.replace("127.0.0.1", "localhost") + "/")
            await expect(second.locator("#login-view")).to_be_visible()
            await second.close()

            async def offered_and_accepted(ticket_id: str, channel: str) -> None:
                _, event = await routed.wait_for(lambda t, b: b["ticket_id"] == ticket_id, EVENT_TIMEOUT)
                assert (event.get("agent_id"), event["decision"]["policy"]) == ("li.na", "demo"), \
                    f"the {channel} was not offered to li.na: {event['decision']['reason']}"
                item = console.locator(f'#worklist li[data-ticket-id="{ticket_id}"]')
                await item.click()
                await console.click("#accept")
                await expect(item).to_have_attribute("data-status", "accepted")

            await asyncio.to_thread(send_email, settings, EMAILS[0], datetime.now(timezone.utc))
            _, email = await email_in.wait_for(lambda t, b: True, 30)
            await offered_and_accepted(email["ticket_id"], "email")
            await offered_and_accepted(await asyncio.to_thread(post_chat, settings, CHATS[0]), "chat")
            await asyncio.to_thread(send_missed_call, settings, CALLS[0])
            _, call = await phone_in.wait_for(lambda t, b: True, EVENT_TIMEOUT)
            await offered_and_accepted(call["ticket_id"], "call")
            assert mesh.exited() == {}, f"a service died: {mesh.exited()}"
    finally:
        await asyncio.to_thread(mesh.stop)
