"""Routing through the whole mesh, in the browser: offers, a decline, a supervisor's reassignment.

Seven services run as separate processes (as ``./dev up`` runs them) on the shipped routing
rules and policy (60 s offers, shared capacity, 15 min decline cooldown) and the demo roster.
Headless Chromium holds three consoles — agents li.na and chen.wei, supervisor wang.fang — and
a customer's chat widget. The story (issue 5): an agent logs in, receives an offer live,
accepts, replies; a second agent declines and the ticket moves on; a supervisor reassigns.

1. A customer chats (zh, general): the dispatcher offers it to one agent, whose console shows
   the offer with its countdown while the other's shows nothing; they accept and reply, and the
   reply appears in the customer's widget.
2. A second chat goes to the other agent (the first one's shared budget is a third used):
   they decline with a reason → ``ticket_declined`` and ``ticket_unassigned(declined)`` on the
   bus, the ticket leaves their console and arrives as an offer in the first agent's, whose
   ticket view shows why (the decision record: a requeue, the decliner left out as ``declined``).
3. An English technical chat finds no eligible agent (chen.wei speaks no English, li.na lacks
   the skill, sam.taylor is signed out) and is queued. The supervisor sees it in the queue
   board, the agents' presence and load, and the decision records; reassigns it to li.na with a
   reason → ``ticket_transferred`` (reassign, assigned) and it appears in li.na's console with
   the system note.
"""
from __future__ import annotations

import asyncio
import re
from datetime import datetime, timezone

from playwright.async_api import expect

from devenv.config import REPO_ROOT, DevSettings
from devenv.demo import DEMO_PASSWORDS, EMAILS, DemoChat, DemoEmail, post_chat, send_email
from devenv.mesh import Mesh, isolated_env
from shared.testing.browser import chromium
from shared.testing.plugin import AsyncEventListener

PUSH_TIMEOUT_MS = 15_000
EVENT_TIMEOUT = 15.0
AGENTS = ("li.na", "chen.wei")
FIRST_CHAT = "你好，我的快递三天没有更新物流信息了，能帮我查一下吗？"
FIRST_REPLY = "您好，已为您联系快递公司，今天内回复您。"
SECOND_CHAT = DemoChat("周杰", "zhou.jie@example.com", "zh", "请问你们周末有人值班吗？我想改一下收货地址")
DECLINE_REASON = "正在处理一通电话回访，请同事接手"
ENGLISH_TECHNICAL = DemoChat("Grace Lee", "grace.lee@example.com", "en",
                             "Hi, the app crashes with an error every time I open it")
REASSIGN_REASON = "Sam is off today; Li Na speaks English"


async def sign_in(browser, desk_url: str, agent_id: str, *, online: bool = True):
    page = await (await browser.new_context(locale="zh-CN")).new_page()
    await page.goto(desk_url + "/")
    await page.fill("#login-agent", agent_id)
    await page.fill("#login-password", DEMO_PASSWORDS[agent_id])
    await page.click("#login-submit")
    await expect(page.locator("#worklist")).to_have_attribute("data-loaded", "true")
    if online:
        await page.click('#presence button[data-presence="online"]')
        await expect(page.locator('#presence button[data-presence="online"]')).to_have_attribute("aria-pressed", "true")
    return page


def worklist_item(console, ticket_id: str):
    return console.locator(f'#worklist li[data-ticket-id="{ticket_id}"]')


async def open_offer(console, ticket_id: str) -> None:
    """The ticket is on the console as an offer: open it and see the banner with its countdown."""
    item = worklist_item(console, ticket_id)
    await expect(item).to_have_attribute("data-status", "assigned", timeout=PUSH_TIMEOUT_MS)
    await item.click()
    await expect(console.locator("#ticket")).to_have_attribute("data-ticket-id", ticket_id)
    await expect(console.locator("#offer")).to_be_visible()
    countdown = console.locator("#offer-countdown")
    await expect(countdown).to_have_text(re.compile(r"^剩余 [01]m \d+s$"))
    seconds = int(await countdown.get_attribute("data-seconds"))
    assert 0 < seconds <= 60, f"offer countdown {seconds}s: routing.offer_timeout_seconds is 60"


def assignment_of(ticket_id: str, attempt: int = 1):
    return lambda t, b: t == "ticket_assigned" and b["ticket_id"] == ticket_id and b["attempt"] == attempt


async def test_offer_accept_reply_decline_and_supervisor_reassign(amqp_uri, redis_url, tmp_path, dovecot,
                                                                  sink_settings):
    env = isolated_env(amqp_uri=amqp_uri, redis_url=redis_url, work_dir=tmp_path, imap_port=dovecot.port,
                       smtp_port=sink_settings.smtp_port)
    settings = DevSettings.from_env(env)
    mesh = Mesh(env, tmp_path / "log")
    await asyncio.to_thread(mesh.start)
    try:
        async with AsyncEventListener(amqp_uri, "intake_chat", ["ticket_received"]) as received, \
                AsyncEventListener(amqp_uri, "dispatcher", ["ticket_assigned", "ticket_unassigned", "ticket_queued",
                                                            "ticket_transferred"]) as dispatcher, \
                AsyncEventListener(amqp_uri, "agent_desk", ["ticket_accepted", "ticket_declined",
                                                            "ticket_transfer_requested"]) as desk, \
                chromium() as browser:
            desk_url = mesh.url("agent_desk")
            consoles = {agent: await sign_in(browser, desk_url, agent) for agent in AGENTS}
            supervisor = await sign_in(browser, desk_url, "wang.fang", online=False)

            # --- 1. a live offer, accepted and answered
            widget = await (await browser.new_context(locale="zh-CN")).new_page()
            await widget.goto(mesh.url("intake_chat") + "/")
            await widget.fill(".tm-name", "刘洋")
            await widget.click(".tm-start")
            await widget.fill(".tm-input", FIRST_CHAT)
            await widget.press(".tm-input", "Enter")
            _, ticket = await received.wait_for(lambda t, b: True, EVENT_TIMEOUT)
            first_id = ticket["ticket_id"]
            _, offer = await dispatcher.wait_for(assignment_of(first_id), EVENT_TIMEOUT)
            first = offer["agent_id"]
            assert first in AGENTS and offer["decision"]["winner"] == first
            assert offer["offer_expires_at"], "an assignment is an offer with a deadline"
            other = next(a for a in AGENTS if a != first)
            console = consoles[first]
            await open_offer(console, first_id)
            await expect(worklist_item(consoles[other], first_id)).to_have_count(0)
            await console.click("#accept")
            await expect(console.locator("#t-status")).to_have_attribute("data-status", "accepted")
            await expect(console.locator("#offer")).to_be_hidden()
            await desk.wait_for(lambda t, b: t == "ticket_accepted" and b["ticket_id"] == first_id, EVENT_TIMEOUT)
            await console.fill("#reply-text", FIRST_REPLY)
            await console.click("#reply-send")
            await expect(widget.locator(".tm-msg-agent .tm-text")).to_have_text(FIRST_REPLY, timeout=PUSH_TIMEOUT_MS)

            # --- 2. the next ticket goes to the other agent (more spare capacity), who declines
            second_id = await asyncio.to_thread(post_chat, settings, SECOND_CHAT)
            _, offer = await dispatcher.wait_for(assignment_of(second_id), EVENT_TIMEOUT)
            assert offer["agent_id"] == other, f"{first} holds a chat, {other} nothing: {offer['decision']}"
            await open_offer(consoles[other], second_id)
            await consoles[other].fill("#decline-reason", DECLINE_REASON)
            await consoles[other].click("#decline")
            _, declined = await desk.wait_for(
                lambda t, b: t == "ticket_declined" and b["ticket_id"] == second_id, EVENT_TIMEOUT)
            assert (declined["agent_id"], declined["reason"]) == (other, DECLINE_REASON)
            _, unassigned = await dispatcher.wait_for(
                lambda t, b: t == "ticket_unassigned" and b["ticket_id"] == second_id, EVENT_TIMEOUT)
            assert (unassigned["agent_id"], unassigned["reason"], unassigned["note"]) == (other, "declined",
                                                                                          DECLINE_REASON)
            _, moved_on = await dispatcher.wait_for(assignment_of(second_id, attempt=2), EVENT_TIMEOUT)
            assert moved_on["agent_id"] == first
            assert moved_on["decision"]["step"] == "requeue"
            assert moved_on["decision"]["rejected"][other].startswith("declined:")
            await expect(worklist_item(consoles[other], second_id)).to_have_count(0)
            await open_offer(console, second_id)
            # The ticket view says why it came here: the reason, and every attempt's record.
            await expect(console.locator("#t-decision")).to_contain_text("most spare chat capacity")
            await console.click("#show-decisions")
            records = console.locator("#t-decisions > li")
            await expect(records).to_have_count(2)
            await expect(records.nth(0)).to_contain_text(f"分配给 {first} · requeue")
            await expect(records.nth(0)).to_contain_text("declined 1")
            await expect(records.nth(1)).to_contain_text(f"分配给 {other} · initial")
            await console.click("#accept")
            await expect(console.locator("#t-status")).to_have_attribute("data-status", "accepted")

            # --- 3. nobody can take an English technical chat; the supervisor reassigns it
            third_id = await asyncio.to_thread(post_chat, settings, ENGLISH_TECHNICAL)
            _, queued = await dispatcher.wait_for(
                lambda t, b: t == "ticket_queued" and b["ticket_id"] == third_id, EVENT_TIMEOUT)
            assert queued["decision"]["reason"].startswith("no eligible agent"), queued["decision"]
            await supervisor.click("#tab-supervisor")
            await expect(supervisor.locator("#supervisor-view")).to_be_visible()
            waiting = supervisor.locator("#sv-queues tbody tr", has_text=third_id)
            await expect(waiting).to_have_attribute("data-skill", "technical", timeout=PUSH_TIMEOUT_MS)
            for agent in AGENTS:
                await expect(supervisor.locator(f'#sv-agents tr[data-agent-id="{agent}"]')).to_have_attribute(
                    "data-presence", "online")
            await expect(supervisor.locator('#sv-agents tr[data-agent-id="sam.taylor"]')).to_have_attribute(
                "data-presence", "offline")
            await expect(supervisor.locator(f'#sv-agents tr[data-agent-id="{first}"]')).to_contain_text("在线咨询 2/3")
            await expect(supervisor.locator("#sv-decisions li", has_text=third_id)).to_contain_text("no eligible agent")
            await supervisor.fill("#sv-ticket", third_id)
            await supervisor.select_option("#sv-target", "agent:li.na")
            await supervisor.fill("#sv-reason", REASSIGN_REASON)
            await supervisor.click("#sv-reassign")
            await expect(supervisor.locator("#sv-result")).to_contain_text(third_id)
            _, requested = await desk.wait_for(
                lambda t, b: t == "ticket_transfer_requested" and b["ticket_id"] == third_id, EVENT_TIMEOUT)
            assert (requested["kind"], requested["requested_by"], requested["to_agent_id"]) == \
                ("reassign", "wang.fang", "li.na")
            _, transferred = await dispatcher.wait_for(
                lambda t, b: t == "ticket_transferred" and b["ticket_id"] == third_id, EVENT_TIMEOUT)
            assert (transferred["kind"], transferred["outcome"], transferred["to_agent_id"],
                    transferred["reason"]) == ("reassign", "assigned", "li.na", REASSIGN_REASON), transferred
            li_na = consoles["li.na"]
            await expect(worklist_item(li_na, third_id)).to_be_visible(timeout=PUSH_TIMEOUT_MS)
            await worklist_item(li_na, third_id).click()
            await expect(li_na.locator("#t-text")).to_have_text(ENGLISH_TECHNICAL.text)
            await expect(li_na.locator("#t-messages li.system", has_text="requested by wang.fang")).to_contain_text(
                REASSIGN_REASON)
            done = li_na.locator("#t-messages li.system", has_text="Reassigned to li.na by wang.fang")
            await expect(done).to_contain_text("(assigned")
            await expect(waiting).to_have_count(0, timeout=PUSH_TIMEOUT_MS)  # the board refreshed itself
            assert mesh.exited() == {}, f"a service died: {mesh.exited()}"
    finally:
        await asyncio.to_thread(mesh.stop)


# An offer runs out after 5 s; an email's first response is due 8 s after it arrived and a
# breach escalates it (the default); everything else is slow.
SHORT_OFFERS = "  offer_timeout_seconds: 5"
ESCALATING_SLA = """
policies:
  - name: e2e email escalates
    when: {channel: [email]}
    first_response: 8
  - name: e2e everything else
    first_response: 3600
"""
UNANSWERED_CHAT = DemoChat("孙丽", "sun.li@example.com", "zh", "你好，会员积分什么时候到账？")
ENGLISH_EMAIL = DemoEmail("Oliver Brown", "oliver.brown@example.com", "When will my order arrive?",
                          "Hello,\n\nI ordered a week ago and have heard nothing since. When will it arrive?\n\nOliver",
                          "utf-8")
NO_L1_EMAIL = EMAILS[1]  # the demo's English "Cannot log in": technical, and no L1 agent has both


def rules_with(tmp_path, line: str):
    """The shipped rules file with one line of its ``routing:`` section replaced."""
    shipped = (REPO_ROOT / "deploy/config/routing.yaml").read_text()
    key = line.split(":")[0]
    lines = [line if current.startswith(key + ":") else current for current in shipped.splitlines()]
    assert line in lines, f"{key.strip()} is not in the shipped routing section"
    path = tmp_path / "routing.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_an_unanswered_offer_moves_on_and_a_breach_escalates_to_l2(amqp_uri, redis_url, tmp_path, dovecot,
                                                                          sink_settings):
    sla = tmp_path / "sla.yaml"
    sla.write_text(ESCALATING_SLA)
    env = isolated_env(amqp_uri=amqp_uri, redis_url=redis_url, work_dir=tmp_path, imap_port=dovecot.port,
                       smtp_port=sink_settings.smtp_port, TM_SLA_POLICY_FILE=str(sla),
                       TM_ROUTING_RULES_FILE=str(rules_with(tmp_path, SHORT_OFFERS)))
    settings = DevSettings.from_env(env)
    mesh = Mesh(env, tmp_path / "log")
    await asyncio.to_thread(mesh.start)
    try:
        async with AsyncEventListener(amqp_uri, "intake_email", ["ticket_received"]) as email_in, \
                AsyncEventListener(amqp_uri, "dispatcher", ["ticket_assigned", "ticket_unassigned", "ticket_queued"]) \
                as dispatcher, \
                AsyncEventListener(amqp_uri, "sla_watcher", ["sla_breached", "ticket_escalated"]) as sla_events, \
                chromium() as browser:
            desk_url = mesh.url("agent_desk")
            consoles = {agent: await sign_in(browser, desk_url, agent) for agent in (*AGENTS, "sam.taylor")}

            # --- an offer nobody answers goes to the other agent when it runs out
            chat_id = await asyncio.to_thread(post_chat, settings, UNANSWERED_CHAT)
            _, offer = await dispatcher.wait_for(assignment_of(chat_id), EVENT_TIMEOUT)
            ignored_by = offer["agent_id"]
            assert ignored_by in AGENTS
            other = next(a for a in AGENTS if a != ignored_by)
            item = worklist_item(consoles[ignored_by], chat_id)
            await expect(item).to_have_attribute("data-status", "assigned", timeout=PUSH_TIMEOUT_MS)
            await item.click()
            await expect(consoles[ignored_by].locator("#offer-countdown")).to_have_text(re.compile(r"^剩余 0m [1-5]s$"))
            _, expired = await dispatcher.wait_for(
                lambda t, b: t == "ticket_unassigned" and b["ticket_id"] == chat_id, EVENT_TIMEOUT)
            assert (expired["agent_id"], expired["reason"]) == (ignored_by, "offer_expired")
            _, moved_on = await dispatcher.wait_for(assignment_of(chat_id, attempt=2), EVENT_TIMEOUT)
            assert moved_on["agent_id"] == other
            assert moved_on["decision"]["rejected"][ignored_by].startswith("declined:")
            await expect(item).to_have_count(0, timeout=PUSH_TIMEOUT_MS)
            await expect(consoles[ignored_by].locator("#action-error")).to_contain_text("分配超时")
            await open_offer(consoles[other], chat_id)
            await consoles[other].click("#accept")
            await expect(consoles[other].locator("#t-status")).to_have_attribute("data-status", "accepted")

            # --- an English email: li.na (the one L1 who speaks English) takes it; its breach
            # moves it to the L2 agent. An English technical email no L1 can take waits, and its
            # breach sends it to the L2 agent too.
            for mail in (ENGLISH_EMAIL, NO_L1_EMAIL):
                await asyncio.to_thread(send_email, settings, mail, datetime.now(timezone.utc))

            async def email_from(mail: DemoEmail) -> str:
                _, ticket = await email_in.wait_for(
                    lambda t, b: b["customer"]["email"] == mail.from_address, 30)
                return ticket["ticket_id"]

            email_id, waiting_id = await email_from(ENGLISH_EMAIL), await email_from(NO_L1_EMAIL)
            _, queued = await dispatcher.wait_for(
                lambda t, b: t == "ticket_queued" and b["ticket_id"] == waiting_id, EVENT_TIMEOUT)
            assert queued["decision"]["reason"].startswith("no eligible agent"), queued["decision"]
            _, offer = await dispatcher.wait_for(assignment_of(email_id), EVENT_TIMEOUT)
            assert offer["agent_id"] == "li.na", offer["decision"]
            li_na = consoles["li.na"]
            await open_offer(li_na, email_id)
            await li_na.click("#accept")
            await expect(li_na.locator("#t-status")).to_have_attribute("data-status", "accepted")
            await sla_events.wait_for(lambda t, b: t == "sla_breached" and b["ticket_id"] == email_id, 20)
            _, escalated = await sla_events.wait_for(
                lambda t, b: t == "ticket_escalated" and b["ticket_id"] == email_id, EVENT_TIMEOUT)
            assert escalated["level"] == 1
            _, taken = await dispatcher.wait_for(
                lambda t, b: t == "ticket_unassigned" and b["ticket_id"] == email_id, EVENT_TIMEOUT)
            assert (taken["agent_id"], taken["reason"]) == ("li.na", "escalated")
            _, to_l2 = await dispatcher.wait_for(
                lambda t, b: t == "ticket_assigned" and b["ticket_id"] == email_id and b["agent_id"] != "li.na",
                EVENT_TIMEOUT)
            assert (to_l2["agent_id"], to_l2["tier"], to_l2["decision"]["step"]) == ("sam.taylor", "L2", "escalation")
            await expect(worklist_item(li_na, email_id)).to_have_count(0, timeout=PUSH_TIMEOUT_MS)
            sam = consoles["sam.taylor"]
            await open_offer(sam, email_id)
            await expect(sam.locator("#t-subject")).to_have_text(ENGLISH_EMAIL.subject)
            await expect(sam.locator("#t-status")).to_have_attribute("data-status", "assigned")
            await sam.click("#accept")
            await expect(sam.locator("#t-status")).to_have_attribute("data-status", "accepted")
            _, waited = await dispatcher.wait_for(assignment_of(waiting_id), EVENT_TIMEOUT)
            assert (waited["agent_id"], waited["decision"]["step"]) == ("sam.taylor", "escalation")
            await expect(worklist_item(sam, waiting_id)).to_have_attribute("data-status", "assigned",
                                                                           timeout=PUSH_TIMEOUT_MS)
            assert mesh.exited() == {}, f"a service died: {mesh.exited()}"
    finally:
        await asyncio.to_thread(mesh.stop)
