"""Connect, then disconnect, a service from ``/account`` in real headless Chromium, through the real oidc-provider's
own sign-in and consent pages. Screenshots are saved as artifacts."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.async_api import expect

from tests.identity.test_signin_chromium import sign_in_at_provider
from tests.support.chromium import artifacts_dir, chromium_page
from tests.support.databases import Backend
from tests.support.gateway import TEST_PASSWORD
from tests.vault.conftest import SERVICE
from tests.vault.test_connect import connectable


async def test_a_person_connects_and_disconnects_a_service_on_the_account_page_in_chromium(tmp_path: Path) -> None:
    db = Backend("sqlite", tmp_path)  # one backend is enough for the browser journey (the HTTP tests cover both)
    await db.start()
    try:
        await _journey(db)
    finally:
        await db.close()


async def _journey(db: Backend) -> None:
    async with connectable(db) as setup, chromium_page() as page:
        gw = setup.gateway
        user = await gw.new_user()
        await page.goto(gw.url + "/account/login")
        await page.fill("#email", user.email)
        await page.fill("#password", TEST_PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page).to_have_url(gw.url + "/account")
        section = page.locator('section[aria-labelledby="services-title"]')
        await expect(section).to_contain_text("not connected")
        await section.get_by_role("button", name=f"Connect {SERVICE}").click()
        await sign_in_at_provider(page, setup.idp, "alice")
        await expect(page).to_have_url(re.compile("^" + re.escape(gw.url + "/account?done=service-connected")))
        await expect(section).to_contain_text("alice@example.com")
        await expect(section.get_by_role("button", name=f"Reconnect {SERVICE}")).to_be_visible()
        await page.screenshot(path=str(artifacts_dir() / "service-connected.png"), full_page=True)
        await section.get_by_role("button", name=f"Disconnect {SERVICE}").click()
        await expect(page).to_have_url(re.compile("^" + re.escape(gw.url + "/account?done=service-disconnected")))
        await expect(section.get_by_role("button", name=f"Connect {SERVICE}")).to_be_visible()
        await page.screenshot(path=str(artifacts_dir() / "service-disconnected.png"), full_page=True)
