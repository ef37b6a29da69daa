"""The status page and the survey in a real (headless) Chromium against the real service, broker and Redis."""
from datetime import timedelta

import pytest

from shared import events as ev
from shared.testing.browser import chromium
from shared.testing.plugin import AsyncEventListener

from services.intake_chat.tests.customer_fixtures import now, pages_app  # noqa: F401 - pages_app is a fixture

UI_TIMEOUT_MS = 10_000
TICKET = "TM-10001"


@pytest.fixture
async def page():
    async with chromium() as browser:
        context = await browser.new_context(locale="en-US", timezone_id="UTC")
        page = await context.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        yield page
        await context.close()


def message(page, text):
    return page.locator(".tm-message", has=page.locator(".tm-text", has_text=text))


async def test_the_status_page_updates_live_takes_a_reply_and_leads_to_the_survey(pages_app, amqp_uri, page):
    await pages_app.stored_ticket(TICKET, subject="Parcel <i>late</i>")
    await page.goto(pages_app.base_url + pages_app.status_path(TICKET))
    assert await page.title() == "Ticket status TM-10001"
    assert await page.locator(".tm-subject").inner_text() == "Parcel <i>late</i>"
    assert await page.locator(".tm-state").inner_text() == "Received"
    await page.locator("#tm-status[data-live=open]").wait_for()
    await page.evaluate("window.__notReloaded = true")

    # An agent's reply published on RabbitMQ appears without a reload, as text.
    await pages_app.accepted(TICKET)
    await pages_app.agent_replied(TICKET, "Sorry! <b>Checking</b> now.\nOne moment.")
    agent = message(page, "Checking")
    await agent.wait_for()
    assert await agent.locator(".tm-author").inner_text() == "李娜"
    assert await agent.locator(".tm-text").inner_text() == "Sorry! <b>Checking</b> now.\nOne moment."
    assert await page.locator(".tm-state").inner_text() == "In progress"

    # The agent asks something and the promised time shows; the customer answers on the page.
    due = now() + timedelta(hours=2)
    await pages_app.status_changed(TICKET, "waiting_on_customer")
    await page.locator(".tm-state[data-status=waiting_on_you]").wait_for()
    assert await page.locator(".tm-eta").inner_text() == ""
    async with AsyncEventListener(amqp_uri, ev.INTAKE_CHAT, [ev.MESSAGE_RECEIVED]) as bus:
        await page.fill("#tm-reply-text", "Order 42, <script>alert(1)</script>")
        await page.click(".tm-reply button")
        await page.locator(".tm-reply-note", has_text="Sent.").wait_for()
        _, sent = await bus.wait_for(lambda t, b: True)
    assert (sent["ticket_id"], sent["channel"], sent["text"]) == (TICKET, "email", "Order 42, <script>alert(1)</script>")
    await message(page, "Order 42").wait_for()
    await page.locator(".tm-state[data-status=assigned]").wait_for()  # answered: no longer waiting on them
    await pages_app.clock(TICKET, "next_response", "activated", due)
    await page.locator(".tm-eta-time").wait_for()
    assert (await page.locator(".tm-eta").inner_text()).startswith("Expected reply by")
    assert await page.input_value("#tm-reply-text") == ""

    # Resolved: the page says so, still without a reload; the survey link takes one answer.
    await pages_app.resolved(TICKET)
    await page.locator(".tm-state[data-status=resolved]").wait_for()
    assert await page.evaluate("window.__notReloaded") is True
    assert await page.evaluate("document.querySelectorAll('script:not([src])').length") == 0
    assert await page.locator(".tm-message .tm-text").all_inner_texts() == [
        "Where is my parcel?", "Sorry! <b>Checking</b> now.\nOne moment.", "Order 42, <script>alert(1)</script>"]
    assert await page.locator(".tm-message .tm-author").all_inner_texts() == ["You", "李娜", "You"]

    async with AsyncEventListener(amqp_uri, ev.INTAKE_CHAT, [ev.CSAT_SUBMITTED]) as bus:
        await page.goto(pages_app.base_url + pages_app.csat_path(TICKET) + "?lang=en")
        await page.check("input[name=score][value='5']")
        await page.fill("#tm-csat-comment", "Fast and kind")
        await page.click(".tm-csat button")
        await page.locator(".tm-csat-done", has_text="Thank you").wait_for()
        _, rated = await bus.wait_for(lambda t, b: True)
    assert (rated["ticket_id"], rated["score"], rated["comment"], rated["agent_id"]) == (TICKET, 5, "Fast and kind",
                                                                                          "li.na")
    await page.goto(pages_app.base_url + pages_app.csat_path(TICKET) + "?lang=en")  # the link again: no second form
    assert await page.locator(".tm-csat-done").inner_text() == "Thank you for your feedback!"
    assert await page.locator("input[name=score]").count() == 0


async def test_the_lookup_form_opens_the_page_in_chinese(pages_app, page):
    await pages_app.stored_ticket(TICKET, phone="+8613812345678")
    await page.goto(pages_app.base_url + "/status?lang=zh")
    await page.fill("#tm-lookup-ticket", "10001")
    await page.fill("#tm-lookup-contact", "138 1234 5678")
    await page.click(".tm-lookup button")
    await page.locator(".tm-state", has_text="已收到").wait_for()
    assert page.url.startswith(pages_app.base_url + "/status/TM-10001.status.")
    await page.click(".tm-cp-lang a")
    await page.locator(".tm-state", has_text="Received").wait_for()
    await page.goto(pages_app.base_url + "/status?lang=en")
    await page.fill("#tm-lookup-ticket", "TM-10001")
    await page.fill("#tm-lookup-contact", "139 0000 0000")
    await page.click(".tm-lookup button")
    await page.locator(".tm-error", has_text="No ticket matches").wait_for()
