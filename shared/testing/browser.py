"""Headless Chromium for browser tests: Debian's /usr/bin/chromium driven by Playwright.

Every suite that opens a browser (the chat widget, the agent console, end-to-end runs) uses
these options, so a flag needed on CI machines is added once. No browser is downloaded:
Playwright drives the system Chromium.

    from shared.testing.browser import chromium

    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(url)

Sync tests can pass ``CHROMIUM_LAUNCH_OPTIONS`` to ``sync_playwright().chromium.launch(**...)``.
"""
from __future__ import annotations

import contextlib
from typing import Any, AsyncIterator

CHROMIUM_EXECUTABLE = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--no-sandbox",  # tests run as root in containers, where the sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
CHROMIUM_LAUNCH_OPTIONS: dict[str, Any] = {
    "executable_path": CHROMIUM_EXECUTABLE,
    "args": list(CHROMIUM_ARGS),
    "headless": True,
}


@contextlib.asynccontextmanager
async def chromium(**overrides: Any) -> AsyncIterator[Any]:
    """A launched headless Chromium (``playwright.async_api.Browser``), closed on exit."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(**{**CHROMIUM_LAUNCH_OPTIONS, **overrides})
        try:
            yield browser
        finally:
            await browser.close()
