"""What the customer sees besides messages: no agents online (and leaving an address for the
answer), typing, files, the transcript mail."""
import hashlib
from datetime import datetime, timezone

import pytest

from shared import events as ev
from shared.testing.browser import chromium
from shared.testing.plugin import AsyncEventListener

from services.intake_chat.tests.browser.test_widget import customer_bubble, send
from services.intake_chat.tests.unit.test_chat_domain import PNG

UI_TIMEOUT_MS = 10_000


@pytest.fixture
async def zh_page():
    async with chromium() as browser:
        context = await browser.new_context(locale="zh-CN")
        page = await context.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        yield page
        await context.close()


async def test_no_agents_typing_a_picture_and_the_transcript(chat_app, amqp_uri, zh_page, tmp_path):
    page = zh_page
    picture = tmp_path / "快递单.png"
    picture.write_bytes(PNG)
    async with AsyncEventListener(amqp_uri, "intake_chat", ["ticket_received", "message_received",
                                                            "chat_transcript_requested"]) as bus:
        await page.goto(chat_app.base_url + "/")
        await page.fill(".tm-name", "王芳")
        await page.click(".tm-start")
        await page.locator(".tm-status", has_text="已连接").wait_for()
        # nobody online and no address given: the widget says so before anything is typed
        await page.locator(".tm-queue[data-state=no_agents]", has_text="留下邮箱").wait_for()
        await page.fill(".tm-leave-email", "wang.fang@example.com")
        await page.click(".tm-leave-email-send")
        await page.locator(".tm-info", has_text="回复到您的邮箱").wait_for()
        assert not await page.locator(".tm-email-form").is_visible()

        await send(page, "快递三天没动了")
        await customer_bubble(page, "快递三天").and_(page.locator("[data-state=acked]")).wait_for()
        _, opened = await bus.wait_for(lambda t, b: t == "ticket_received")
        ticket, visitor = opened["ticket_id"], opened["customer"]["chat_visitor_id"]
        assert opened["customer"]["email"] == "wang.fang@example.com"  # answered by email if nobody comes

        await page.set_input_files(".tm-file-input", str(picture))
        await page.locator(".tm-msg-customer[data-state=acked] .tm-file", has_text="快递单.png").wait_for()
        _, with_file = await bus.wait_for(lambda t, b: t == "message_received")
        assert with_file["attachments"][0]["sha256"] == hashlib.sha256(PNG).hexdigest()
        assert await page.locator(".tm-file img").count() == 1  # the sender's own preview

        typing = ev.make_event(ev.AGENT_DESK, ev.AGENT_TYPING, now=datetime.now(timezone.utc), trace_id="t",
                               ticket_id=ticket, agent_id="li.na")
        await chat_app.publish(ev.AGENT_DESK, ev.AGENT_TYPING, typing)
        await page.locator(".tm-typing", has_text="李娜正在输入").wait_for()
        await chat_app.publish_agent_reply(ticket, "已联系快递公司。", reply_id="r-1", visitor_id=visitor)
        await page.locator(".tm-msg-agent .tm-text", has_text="已联系快递公司").wait_for()
        assert await page.locator(".tm-typing").inner_text() == ""
        await page.screenshot(path=str(tmp_path / "widget.png"))

        await page.click(".tm-transcript")  # the address left earlier is used: no second question
        await page.locator(".tm-info", has_text="wang.fang@example.com").wait_for()
        assert not await page.locator(".tm-transcript-form").is_visible()
        _, requested = await bus.wait_for(lambda t, b: t == "chat_transcript_requested")
        assert [e["text"] for e in requested["entries"]] == ["快递三天没动了", "", "已联系快递公司。"]
        assert requested["entries"][1]["files"] == ["快递单.png"]
