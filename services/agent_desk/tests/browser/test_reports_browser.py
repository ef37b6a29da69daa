"""The Reports tab in headless Chromium: a scripted day published through RabbitMQ, recorded by the
desk in Redis, drawn as SVG charts whose numbers and bar heights are checked."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import aiohttp
from playwright.async_api import expect

from services.agent_desk.tests import report_day
from services.agent_desk.tests.browser.test_offers_and_supervisor_browser import sign_in
from services.agent_desk.tests.factories import PASSWORDS
from shared import events as ev
from shared.testing.browser import chromium

YESTERDAY = (datetime.now(timezone.utc) - timedelta(days=1)).date()
CHART_ROOM = 190 - 34 - 18   # plot height in the SVG's own units (app.js CHART): the tallest bar


async def _record_day_and_a_strange_skill(base_url: str, publish) -> None:
    events = await report_day.publish_day(publish, YESTERDAY)
    # Today, so only the backlog (which is now) shows it: a skill name written as markup.
    now = datetime.now(timezone.utc)
    strange = [
        ("intake_chat", ev.TICKET_RECEIVED, ev.make_event(
            "intake_chat", ev.TICKET_RECEIVED, now=now, trace_id="trace-TM-20009", ticket_id="TM-20009", channel="chat",
            customer={"name": "<img src=x onerror=alert(1)>"}, subject="", text="hi", received_at=now.isoformat())),
        ("dispatcher", ev.TICKET_CLASSIFIED, ev.make_event(
            "dispatcher", ev.TICKET_CLASSIFIED, now=now, trace_id="trace-TM-20009", ticket_id="TM-20009",
            channel="chat", priority="P3", required_skills=["<b>vip</b>"], language="en",
            received_at=now.isoformat())),
    ]
    for source, event_type, body in strange:
        await publish(source, event_type, body)
    async with aiohttp.ClientSession(base_url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await http.post("/api/login", json={"agent_id": "wang.fang", "password": PASSWORDS["wang.fang"]})
        await report_day.wait_recorded(http, events + strange)


async def _values(page, selector: str) -> list[str]:
    return await page.locator(selector).evaluate_all("nodes => nodes.map(n => n.dataset.value)")


async def _heights(page, selector: str) -> list[float]:
    return await page.locator(selector).evaluate_all("nodes => nodes.map(n => parseFloat(n.getAttribute('height')))")


async def test_a_supervisor_sees_the_days_figures_as_charts(base_url, publish):
    await _record_day_and_a_strange_skill(base_url, publish)
    async with chromium() as browser:
        agent = await sign_in(browser, base_url, "li.na", locale="en-GB")
        await expect(agent.locator("#tab-reports")).to_be_hidden()

        page = await browser.new_page(locale="en-GB", timezone_id="UTC")
        await page.goto(base_url + "/")
        await page.fill("#login-agent", "wang.fang")
        await page.fill("#login-password", PASSWORDS["wang.fang"])
        await page.click("#login-submit")
        await page.click("#tab-reports")
        await expect(page.locator("#reports-view")).to_be_visible()
        await expect(page.locator("#reports-view")).to_have_attribute("data-loaded", re.compile(r"\d+"))
        day = YESTERDAY.isoformat()
        await page.fill("#rp-from", day)
        await page.fill("#rp-to", day)
        await page.select_option("#rp-by", "agent")
        await page.click("#rp-refresh")
        await expect(page.locator('#rp-totals dd[data-kpi="tickets"]')).to_have_text("5")
        await expect(page.locator('#rp-totals dd[data-kpi="sla"]')).to_have_text("75.0%")
        await expect(page.locator('#rp-totals dd[data-kpi="frt"]')).to_have_text("2m 0s / 20m 0s")
        await expect(page.locator('#rp-totals dd[data-kpi="breaches"]')).to_have_text("1 / 1")
        await expect(page.locator('#rp-totals dd[data-kpi="csat"]')).to_have_text("3.67 (3)")
        await expect(page.locator("#rp-key")).to_have_text("Agent")
        await expect(page.locator('#rp-rows tr[data-key="li.na"]')).to_contain_text("100.0%")
        await expect(page.locator('#rp-rows tr[data-key=""]')).to_contain_text("unassigned")

        # SLA attainment over time: one day, one point at 75 %.
        points = page.locator("#chart-sla circle.point")
        await expect(points).to_have_count(1)
        assert await _values(page, "#chart-sla circle.point") == ["75"]
        assert await points.first.get_attribute("data-key") == day
        cy = float(await points.first.get_attribute("cy"))
        assert abs((190 - 34 - cy) - CHART_ROOM * 0.75) < 0.2

        # First responses of 1, 2, 4 and 20 minutes.
        assert await _values(page, "#chart-response g.bar") == ["0", "3", "0", "1", "0", "0", "0"]
        assert await _heights(page, "#chart-response g.bar rect") == [0, CHART_ROOM, 0, CHART_ROOM / 3, 0, 0, 0]
        assert await page.locator("#chart-response text.label").all_text_contents() == [
            "<1m", "1–5m", "5–15m", "15m–1h", "1–4h", "4–24h", "≥24h"]

        # Backlog now: TM-20005 (reopened), TM-20004 (queued) and today's ticket with its odd skill.
        assert await page.locator("#chart-backlog g.bar").evaluate_all("nodes => nodes.map(n => n.dataset.key)") == [
            "<b>vip</b>", "billing", "technical"]
        assert await _values(page, "#chart-backlog g.bar") == ["1", "1", "1"]
        await expect(page.locator("#chart-backlog text.label").first).to_have_text("<b>vip</b>")
        assert await page.locator("#chart-backlog b, #reports-view img").count() == 0

        # CSAT answers 2, 4 and 5.
        assert await _values(page, "#chart-csat g.bar") == ["0", "1", "0", "1", "1"]
        assert await _heights(page, "#chart-csat g.bar rect") == [0, CHART_ROOM, 0, CHART_ROOM, CHART_ROOM]

        # Several days: a line joins consecutive days with figures and breaks at a day without.
        await page.evaluate("""lineChart(document.getElementById('chart-sla'), 'SLA', [
            {key: 'a', label: 'a', value: 50, title: ''}, {key: 'b', label: 'b', value: 100, title: ''},
            {key: 'c', label: 'c', value: null, title: ''}, {key: 'd', label: 'd', value: 0, title: ''}])""")
        assert await page.locator("#chart-sla polyline").count() == 1
        assert len((await page.locator("#chart-sla polyline").get_attribute("points")).split()) == 2
        assert await _values(page, "#chart-sla circle.point") == ["50", "100", "0"]

        await page.click("#lang-toggle")
        await expect(page.locator("#chart-response text.label").first).to_have_text("<1分")
        assert await page.locator("#chart-response text.label").all_text_contents() == [
            "<1分", "1–5分", "5–15分", "15分–1小时", "1–4小时", "4–24小时", "≥24小时"]
        await expect(page.locator("#rp-key")).to_have_text("坐席")
        await expect(page.locator('#rp-rows tr[data-key=""] td').first).to_have_text("未分配")
        await expect(page.locator("#tab-reports")).to_have_text("报表")
