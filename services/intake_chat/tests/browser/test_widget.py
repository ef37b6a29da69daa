"""The chat widget in a real (headless) Chromium against the real service, broker and Redis."""
import asyncio

import pytest
from aiohttp import web

from shared.testing.asyncio_helpers import wait_until
from shared.testing.browser import chromium
from shared.testing.plugin import AsyncEventListener

UI_TIMEOUT_MS = 10_000


@pytest.fixture
async def page():
    async with chromium() as browser:
        context = await browser.new_context(locale="en-US")
        page = await context.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        yield page
        await context.close()


async def send(page, text):
    await page.fill(".tm-input", text)
    await page.press(".tm-input", "Enter")


def customer_bubble(page, text):
    return page.locator(".tm-msg-customer", has=page.locator(".tm-text", has_text=text))


async def test_chat_from_page_to_bus_and_back_survives_a_reconnect(chat_app, amqp_uri, page):
    async with AsyncEventListener(amqp_uri, "intake_chat") as bus:
        await page.goto(chat_app.base_url + "/")
        assert await page.title() == "Customer support chat"  # Accept-Language en-US
        await page.fill(".tm-name", "Ann <b>Lee</b>")
        await page.click(".tm-start")
        await page.locator(".tm-status", has_text="Connected").wait_for()

        await send(page, "My parcel <script>alert(1)</script> is late")
        await customer_bubble(page, "My parcel").and_(page.locator("[data-state=acked]")).wait_for()
        _, opened = await bus.wait_for(lambda t, b: t == "ticket_received")
        assert opened["text"] == "My parcel <script>alert(1)</script> is late"
        assert opened["customer"]["name"] == "Ann <b>Lee</b>" and opened["customer"]["language"] == "en"

        await chat_app.publish_agent_reply(opened["ticket_id"], "Sorry! <i>Checking</i> now.", reply_id="r-1",
                                           visitor_id=opened["customer"]["chat_visitor_id"])
        agent = page.locator(".tm-msg-agent .tm-text")
        await agent.filter(has_text="Checking").wait_for()
        assert await agent.inner_text() == "Sorry! <i>Checking</i> now."  # shown as text, not markup
        assert await page.locator(".tm-msg-agent .tm-author").inner_text() == "李娜"

        # The server drops the socket; a message typed meanwhile waits and is sent once after hello.
        await chat_app.service.close_websockets(code=1012, message="restart")
        await send(page, "还在吗？")
        await customer_bubble(page, "还在吗？").and_(page.locator("[data-state=acked]")).wait_for()
        await page.locator(".tm-status", has_text="Connected").wait_for()
        await send(page, "sentinel")
        await bus.wait_for(lambda t, b: b.get("text") == "sentinel")
        texts = [b["text"] for t, b in bus.events if t == "message_received"]
        assert texts == ["还在吗？", "sentinel"]
        assert all(b["ticket_id"] == opened["ticket_id"] for _, b in bus.events)

        # A reload shows the conversation from the server's transcript, each message once.
        await page.reload()
        await page.locator(".tm-msg-customer[data-state=acked]").nth(2).wait_for()
        assert await page.locator(".tm-msg .tm-text").all_inner_texts() == [
            "My parcel <script>alert(1)</script> is late", "Sorry! <i>Checking</i> now.", "还在吗？", "sentinel"]
        assert await page.evaluate("document.querySelectorAll('script:not([src])').length") == 0


@pytest.fixture
async def shop_site(chat_app):
    """Another site (its own origin) whose page embeds the widget with one script tag."""
    html = (f'<!doctype html><html><head><title>Shop</title></head><body><h1>Shop</h1>'
            f'<script src="{chat_app.base_url}/widget.js" data-lang="zh" async></script></body></html>')

    async def shop_page(_request):
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/shop", shop_page)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://localhost:{runner.addresses[0][1]}/shop"  # allowed by the default localhost:* rule
    await runner.cleanup()


async def test_one_script_tag_embeds_the_floating_widget_on_another_site(chat_app, amqp_uri, page, shop_site):
    async with AsyncEventListener(amqp_uri, "intake_chat") as bus:
        await page.goto(shop_site)
        launcher = page.locator(".tm-launcher")
        assert (await launcher.inner_text()).startswith("在线咨询")
        assert not await page.locator(".tm-panel").is_visible()
        await launcher.click()
        await page.fill(".tm-name", "王芳")
        await page.fill(".tm-email", "wang.fang@example.com")
        await page.click(".tm-start")
        await send(page, "发票抬头写错了")
        await customer_bubble(page, "发票抬头").and_(page.locator("[data-state=acked]")).wait_for()
        _, opened = await bus.wait_for(lambda t, b: t == "ticket_received")
        assert opened["customer"]["email"] == "wang.fang@example.com" and opened["customer"]["language"] == "zh"

        await page.click(".tm-close")  # closed panel: a reply shows as an unread badge
        await chat_app.publish_agent_reply(opened["ticket_id"], "已为您重开发票。", reply_id="r-9",
                                           visitor_id=opened["customer"]["chat_visitor_id"])
        await page.locator(".tm-badge", has_text="1").wait_for()
        await launcher.click()
        assert await page.locator(".tm-msg-agent .tm-text").inner_text() == "已为您重开发票。"


class RestartableProxy:
    """A TCP proxy on a fixed loopback port that can be taken down and brought back, so a
    browser behind it loses its socket and cannot reconnect until it returns (a network drop)."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = 0
        self._server = None
        self._links: set = set()

    async def start(self):
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self):
        self._server.close()
        for writer in list(self._links):
            writer.transport.abort()  # RST, as a dead link looks
        await self._server.wait_closed()

    async def _serve(self, reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._links.update((writer, up_writer))

        async def pump(src, dst):
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._links.difference_update((writer, up_writer))


@pytest.fixture
async def proxy(chat_app):
    link = await RestartableProxy(chat_app.service.port).start()
    yield link
    await link.stop()


async def test_a_dropped_link_loses_nothing_and_replays_what_the_customer_missed(chat_app, amqp_uri, page, proxy,
                                                                                 redis_client):
    base = f"http://127.0.0.1:{proxy.port}"
    async with AsyncEventListener(amqp_uri, "intake_chat") as bus:
        await page.goto(base + "/?lang=en")
        await page.fill(".tm-name", "Ann")
        await page.fill(".tm-email", "ann@example.com")
        await page.click(".tm-start")
        await send(page, "My parcel is late")
        await customer_bubble(page, "My parcel").and_(page.locator("[data-state=acked]")).wait_for()
        _, opened = await bus.wait_for(lambda t, b: t == "ticket_received")
        ticket, visitor = opened["ticket_id"], opened["customer"]["chat_visitor_id"]
        await chat_app.publish_agent_reply(ticket, "Looking into it.", reply_id="r-1", visitor_id=visitor)
        await page.locator(".tm-msg-agent .tm-text", has_text="Looking into it.").wait_for()

        # The link dies: the widget keeps retrying; meanwhile the agent answers and the customer types.
        await proxy.stop()
        await page.locator(".tm-status", has_text="reconnecting").wait_for()
        await chat_app.publish_agent_reply(ticket, "Found it: it ships today.", reply_id="r-2", visitor_id=visitor)
        await send(page, "Are you still there?")
        await customer_bubble(page, "still there").and_(page.locator("[data-state=pending]")).wait_for()
        await wait_until(lambda: redis_client.llen(f"tm:intake_chat:transcript:{ticket}") == 3, 10,
                         "the missed reply recorded by the pooled consumer")

        await proxy.start()  # same port: the widget's next retry gets through and resumes
        await page.locator(".tm-status", has_text="Connected").wait_for(timeout=20_000)
        await page.locator(".tm-msg-agent .tm-text", has_text="ships today").wait_for()
        await customer_bubble(page, "still there").and_(page.locator("[data-state=acked]")).wait_for()
        await chat_app.publish_agent_reply(ticket, "Anything else?", reply_id="r-3", visitor_id=visitor)
        await page.locator(".tm-msg-agent .tm-text", has_text="Anything else?").wait_for()

        assert await page.locator(".tm-msg .tm-text").all_inner_texts() == [
            "My parcel is late", "Looking into it.", "Found it: it ships today.", "Are you still there?",
            "Anything else?"]
        await bus.wait_for(lambda t, b: b.get("text") == "Are you still there?")
        assert [b["text"] for t, b in bus.events] == ["My parcel is late", "Are you still there?"]
        # The widget holds every position and told the server so: nothing is mailed as missed.
        assert await page.evaluate("window.__ticketmeshChat.position().seq") == 5
        await wait_until(lambda: redis_client.hget(f"tm:intake_chat:state:{ticket}", "delivered") == "5", 10,
                         "the widget's confirmation")
