"""Real headless Chromium (Debian's ``chromium``) driven by Playwright, for the dashboard's browser journeys.

Never ``playwright install``: the system browser is launched by path with the network-quiet flags below. Without
it the browser tests skip locally and FAIL under ``CI=true``. Screenshots go to ``$PYTEST_ARTIFACTS`` (default
``tests/artifacts/``, git-ignored).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000


def artifacts_dir() -> Path:
    path = Path(os.environ.get("PYTEST_ARTIFACTS", Path(__file__).parent.parent / "artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def require_chromium() -> None:
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} is missing (apt-get install chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@asynccontextmanager
async def chromium_page() -> AsyncIterator[Page]:
    """One fresh browser profile (its own cookies) and a page in it."""
    require_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context()
            context.set_default_timeout(TIMEOUT_MS)
            yield await context.new_page()
        finally:
            await browser.close()
