"""Signing in with the identity provider (the real oidc-provider) in real headless Chromium: on the dashboard, and
in an MCP client's authorization, through the provider's own sign-in and consent pages. Screenshots are saved
as artifacts."""

from __future__ import annotations

import re

from playwright.async_api import Page, expect

from gateway.storage import Storage
from tests.identity.signin_support import DISPLAY_NAME, gateway_with_provider
from tests.support.chromium import artifacts_dir, chromium_page
from tests.support.oauth_flows import new_pkce, register
from tests.support.oidc import OidcProvider


async def sign_in_at_provider(page: Page, idp: OidcProvider, login: str) -> None:
    """The provider's development sign-in page, then its consent page."""
    await expect(page).to_have_url(re.compile("^" + re.escape(idp.issuer + "/interaction/")))
    await page.fill('input[name="login"]', login)
    await page.fill('input[name="password"]', "any-password")
    await page.locator('form:has(input[name="prompt"][value="login"]) button[type="submit"]').click()
    await page.locator('form:has(input[name="prompt"][value="consent"]) button[type="submit"]').click()


async def test_a_person_signs_in_to_the_dashboard_with_the_provider_in_chromium(sqlite_storage: Storage) -> None:
    async with gateway_with_provider(sqlite_storage) as (gateway, idp), chromium_page() as page:
        await page.goto(gateway.url + "/account/login")
        await page.screenshot(path=str(artifacts_dir() / "provider-signin-page.png"), full_page=True)
        await page.get_by_role("link", name=f"Continue with {DISPLAY_NAME}").click()
        await sign_in_at_provider(page, idp, "alice")
        await expect(page).to_have_url(gateway.url + "/account")
        identities = page.locator('section[aria-labelledby="identities-title"]')
        await expect(identities).to_contain_text(DISPLAY_NAME)
        await expect(identities).to_contain_text("alice@example.com")
        await page.screenshot(path=str(artifacts_dir() / "provider-signin-dashboard.png"), full_page=True)


async def test_an_mcp_clients_authorization_signs_in_with_the_provider_in_chromium(sqlite_storage: Storage) -> None:
    async with gateway_with_provider(sqlite_storage) as (gateway, idp), chromium_page() as page:
        app = await register(gateway.url, client_name="Chromium MCP client")
        await page.goto(app.authorization_url(new_pkce()))
        await page.get_by_role("link", name=f"Continue with {DISPLAY_NAME}").click()
        await sign_in_at_provider(page, idp, "alice")
        await expect(page).to_have_url(re.compile("^" + re.escape(gateway.url + "/consent?tx=")))
        await expect(page.get_by_role("button", name="Approve")).to_be_visible()
        await expect(page.locator("body")).to_contain_text("alice@example.com")
        await page.screenshot(path=str(artifacts_dir() / "provider-signin-consent.png"), full_page=True)
