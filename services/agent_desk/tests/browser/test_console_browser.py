"""The agent console in headless Chromium against the desk, RabbitMQ and Redis."""
from __future__ import annotations

from playwright.async_api import expect

from services.agent_desk.tests.factories import PASSWORDS, ticket_assigned, ticket_received
from shared.testing.browser import chromium
from shared.testing.plugin import AsyncEventListener


async def test_agent_signs_in_gets_a_pushed_ticket_and_works_it(base_url, publish, amqp_uri):
    async with chromium() as browser, AsyncEventListener(amqp_uri, "agent_desk") as desk_events:
        page = await browser.new_page(locale="zh-CN")
        await page.goto(base_url + "/")
        await page.fill("#login-agent", "li.na")
        await page.fill("#login-password", PASSWORDS["li.na"])
        await page.click("#login-submit")
        await expect(page.locator("#agent-name")).to_have_text("李娜")
        await expect(page.locator("#worklist")).to_have_attribute("data-loaded", "true")

        await page.click('#presence button[data-presence="online"]')
        await desk_events.wait_for(lambda t, b: t == "agent_presence_changed" and b["presence"] == "online")
        await expect(page.locator('#presence button[data-presence="online"]')).to_have_attribute("aria-pressed", "true")

        await page.evaluate("window.__sameDocument = true")  # gone if the page reloads
        await publish("intake_email", "ticket_received", ticket_received("TM-10001"))
        await publish("dispatcher", "ticket_assigned", ticket_assigned("TM-10001"))
        await expect(page.locator('#worklist li[data-ticket-id="TM-10001"]')).to_be_visible(timeout=10_000)
        assert await page.evaluate("window.__sameDocument === true")
        # Customer text is shown as text: the markup in it stays visible characters.
        await expect(page.locator("#t-text")).to_have_text("你好，我上个月的发票抬头写错了，请帮忙重开。<b>谢谢</b>")
        assert await page.locator("#t-text b").count() == 0
        await expect(page.locator("#t-decision")).to_have_text("billing 5/5, zh, load 0/10")
        await expect(page.locator("#t-skills")).to_have_text("billing")

        await page.click("#accept")
        _, accepted = await desk_events.wait_for(lambda t, b: t == "ticket_accepted")
        assert accepted["ticket_id"] == "TM-10001" and accepted["agent_id"] == "li.na"
        await expect(page.locator("#t-status")).to_have_attribute("data-status", "accepted")

        await page.fill("#reply-text", "您好，发票已为您重新开具，请查收。")
        await page.click("#reply-send")
        _, replied = await desk_events.wait_for(lambda t, b: t == "agent_replied")
        assert replied["text"] == "您好，发票已为您重新开具，请查收。"
        await expect(page.locator("#t-messages li.agent .text")).to_have_text("您好，发票已为您重新开具，请查收。")

        # Waiting on the customer: the option says it pauses the SLA clocks, and the event carries the flag.
        await expect(page.locator('#t-work-status option[value="waiting_on_customer"]')).to_have_text(
            "等待客户回复（SLA 暂停）")
        await page.select_option("#t-work-status", "waiting_on_customer")
        _, waiting = await desk_events.wait_for(lambda t, b: t == "ticket_status_changed")
        assert (waiting["status"], waiting["paused"]) == ("waiting_on_customer", True)
        await expect(page.locator("#t-work-status")).to_have_attribute("data-status", "waiting_on_customer")

        await page.click("#resolve")
        _, resolved = await desk_events.wait_for(lambda t, b: t == "ticket_resolved")
        assert resolved["ticket_id"] == "TM-10001"
        await expect(page.locator("#t-status")).to_have_attribute("data-status", "resolved")

        await page.click("#lang-toggle")
        await expect(page.locator("#accept")).to_have_text("Accept")
        await expect(page.locator("#t-status")).to_have_text("Resolved")
