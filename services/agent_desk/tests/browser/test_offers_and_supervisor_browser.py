"""Offers, declines and the supervisor view in headless Chromium against the desk, RabbitMQ and Redis.

The dispatcher is played by the test (it publishes dispatcher events); the whole mesh with the
real dispatcher is the end-to-end suite's job.
"""
from __future__ import annotations

import re

from playwright.async_api import expect

from services.agent_desk.tests.factories import (PASSWORDS, offer, sla_event, ticket_classified, ticket_queued,
                                                 ticket_received)
from shared.testing.browser import chromium
from shared.testing.plugin import AsyncEventListener


async def sign_in(browser, base_url: str, agent_id: str, locale: str = "zh-CN"):
    page = await browser.new_page(locale=locale)
    await page.goto(base_url + "/")
    await page.fill("#login-agent", agent_id)
    await page.fill("#login-password", PASSWORDS[agent_id])
    await page.click("#login-submit")
    await expect(page.locator("#worklist")).to_have_attribute("data-loaded", "true")
    return page


async def test_an_offer_arrives_live_with_a_chime_and_is_accepted_and_answered(base_url, publish, amqp_uri):
    async with chromium() as browser, AsyncEventListener(amqp_uri, "agent_desk") as desk_events:
        page = await sign_in(browser, base_url, "li.na")
        await page.click('#presence button[data-presence="online"]')  # a click also unlocks the audio
        await publish("intake_email", "ticket_received", ticket_received("TM-10001"))
        await publish("dispatcher", "ticket_classified", ticket_classified("TM-10001"))
        await publish("dispatcher", "ticket_assigned", offer("TM-10001", "li.na", seconds=120))
        await expect(page.locator('#worklist li[data-ticket-id="TM-10001"]')).to_be_visible(timeout=10_000)
        await expect(page.locator("#offer")).to_be_visible()
        await expect(page.locator("#offer-countdown")).to_have_text(re.compile(r"^剩余 (2m 0s|1m \d\ds)$"))
        assert await page.evaluate("window.__tmBeeps") >= 1
        await publish("sla_watcher", "sla_warning", sla_event("TM-10001", due_in=600))
        await expect(page.locator("#t-sla")).to_have_attribute("data-state", "sla_warning")
        await expect(page.locator("#t-sla")).to_contain_text("剩余")
        # The classification came before the offer, so the offered view already has it.
        await page.click("#accept")
        _, accepted = await desk_events.wait_for(lambda t, b: t == "ticket_accepted")
        assert accepted["agent_id"] == "li.na"
        await expect(page.locator("#offer")).to_be_hidden()
        await expect(page.locator("#t-tags")).to_contain_text("invoice")
        await expect(page.locator("#t-category")).to_have_text("billing")
        await expect(page.locator("#t-contact")).to_have_text("zhang.wei@example.com")

        await page.fill("#reply-text", "您好，正在为您处理。")
        await page.click("#reply-send")
        _, replied = await desk_events.wait_for(lambda t, b: t == "agent_replied")
        assert replied["text"] == "您好，正在为您处理。" and replied["channel"] == "email"
        await page.fill("#note-text", "<i>老客户</i>，优先处理")
        await page.click("#note-send")
        await expect(page.locator("#t-messages li.note .text")).to_have_text("<i>老客户</i>，优先处理")
        assert await page.locator("#t-messages li.note i").count() == 0

        await page.click("#lang-toggle")
        await expect(page.locator("#note-send")).to_have_text("Add internal note")
        await expect(page.locator("#t-messages li.note .meta")).to_contain_text("Internal note")
        await page.reload()  # the language choice is remembered
        await expect(page.locator("#resolve")).to_have_text("Resolve")


async def test_a_second_agent_declines_an_offer(base_url, publish, amqp_uri):
    async with chromium() as browser, AsyncEventListener(amqp_uri, "agent_desk", ["ticket_declined"]) as declines:
        page = await sign_in(browser, base_url, "sam.taylor", locale="en-GB")
        await publish("intake_email", "ticket_received", ticket_received("TM-10002"))
        await publish("dispatcher", "ticket_assigned", offer("TM-10002", "sam.taylor", seconds=60, attempt=2))
        await expect(page.locator('#worklist li[data-ticket-id="TM-10002"]')).to_be_visible(timeout=10_000)
        await expect(page.locator("#offer")).to_be_visible()
        await page.fill("#decline-reason", "not my area")
        await page.click("#decline")
        _, declined = await declines.wait_for(lambda t, b: True)
        assert (declined["ticket_id"], declined["agent_id"], declined["reason"]) == ("TM-10002", "sam.taylor", "not my area")
        await expect(page.locator('#worklist li[data-ticket-id="TM-10002"]')).to_have_count(0)
        await expect(page.locator("#ticket")).to_be_hidden()


async def test_supervisor_sees_the_board_live_and_reassigns(base_url, publish, amqp_uri):
    async with chromium() as browser, \
            AsyncEventListener(amqp_uri, "agent_desk", ["ticket_transfer_requested"]) as requests:
        agent_page = await sign_in(browser, base_url, "li.na", locale="en-GB")
        await agent_page.click('#presence button[data-presence="online"]')
        await publish("intake_email", "ticket_received", ticket_received("TM-10001"))
        await publish("dispatcher", "ticket_assigned", offer("TM-10001", "li.na"))
        await expect(agent_page.locator('#worklist li[data-ticket-id="TM-10001"]')).to_be_visible(timeout=10_000)

        page = await sign_in(browser, base_url, "wang.fang", locale="en-GB")
        await page.click("#tab-supervisor")
        await expect(page.locator("#supervisor-view")).to_be_visible()
        await expect(page.locator('#sv-agents tr[data-agent-id="li.na"]')).to_have_attribute("data-presence", "online")
        await expect(page.locator('#sv-agents tr[data-agent-id="li.na"]')).to_contain_text("Email 1/10")

        # Live: a ticket queued and an SLA breach after the board was opened show up without a reload.
        await publish("intake_email", "ticket_received", ticket_received("TM-20001"))
        await publish("dispatcher", "ticket_queued", ticket_queued("TM-20001", skills=("technical",), priority="P1"))
        await publish("sla_watcher", "sla_breached", sla_event("TM-10001", breached=True, due_in=-10))
        await expect(page.locator('#sv-queues tr[data-skill="technical"]')).to_contain_text("P1×1", timeout=10_000)
        await expect(page.locator('#sv-risk tr[data-ticket-id="TM-10001"]')).to_have_attribute("data-state", "breached")

        await page.click('#sv-risk tr[data-ticket-id="TM-10001"]')
        await expect(page.locator("#sv-ticket")).to_have_value("TM-10001")
        await page.select_option("#sv-target", "agent:sam.taylor")
        await page.fill("#sv-reason", "li.na is overloaded")
        await page.click("#sv-reassign")
        _, request = await requests.wait_for(lambda t, b: True)
        assert (request["kind"], request["ticket_id"], request["to_agent_id"], request["requested_by"]) == \
            ("reassign", "TM-10001", "sam.taylor", "wang.fang")
        await expect(page.locator("#sv-result")).to_contain_text("Requested")

        await page.click("#lang-toggle")
        await expect(page.locator("#sv-reassign")).to_have_text("手动改派")
        await expect(page.locator('#sv-agents tr[data-agent-id="li.na"]')).to_contain_text("在线")
