"""The dashboard in real headless Chromium: sign up, sign out and log in, connect two MCP clients through the
real OAuth flow, see them under Authorized Apps, revoke one and watch its next MCP call fail while the other
keeps working; create an API key, use it, revoke it. Screenshots of the consent page and the dashboard are
saved as artifacts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from mcp.client.auth import OAuthClientProvider
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata
from playwright.async_api import Page, expect

from gateway.clock import ManualClock
from gateway.usage_history import USAGE_HISTORY
from tests.support.chromium import artifacts_dir, chromium_page
from tests.support.gateway import TEST_PASSWORD, GatewayHandle
from tests.support.mcp_clients import streamable_session_client
from tests.support.oauth_clients import MemoryTokenStorage, oauth_mcp_client
from tests.support.oauth_flows import bearer, post_mcp

WAIT = 60.0
EMAIL = "grace@example.com"
CACHE_BOUND = 1.0


class AuthorizationRefused(Exception):
    """The test browser was told not to approve any more authorizations."""


class LoopbackReceiver:
    """The client's own loopback redirect receiver (RFC 8252 §7.3): what a native client listens on."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        await self.received.put(dict(request.query))
        return web.Response(text="Return to your application.")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[LoopbackReceiver]:
        app = web.Application()
        app.router.add_get("/callback", self.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/callback"
        try:
            yield self
        finally:
            await runner.cleanup()


@dataclass
class ChromiumApproval:
    """The SDK's redirect and callback handlers, answered by a person at the real browser: approve on the
    consent page; the browser is sent to the client's loopback receiver, which hands the code back."""

    page: Page
    receiver: LoopbackReceiver
    screenshot: str | None = None
    allowed: bool = True
    _url: str | None = field(default=None, init=False)

    async def redirect_handler(self, url: str) -> None:
        self._url = url

    async def callback_handler(self) -> AuthorizationCodeResult:
        if not self.allowed or self._url is None:
            raise AuthorizationRefused
        await self.page.goto(self._url)
        approve = self.page.get_by_role("button", name="Approve")
        await expect(approve).to_be_visible()
        if self.screenshot:
            await self.page.screenshot(path=artifacts_dir() / self.screenshot, full_page=True)
        await approve.click()
        await expect(self.page.get_by_text("Return to your application.")).to_be_visible()
        params = await asyncio.wait_for(self.receiver.received.get(), WAIT)
        return AuthorizationCodeResult(code=params["code"], state=params.get("state"), iss=params.get("iss"))

    def provider(self, gateway: GatewayHandle, tokens: MemoryTokenStorage, name: str) -> OAuthClientProvider:
        metadata = OAuthClientMetadata(
            client_name=name,
            redirect_uris=[self.receiver.url],  # type: ignore[list-item]
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        )
        return OAuthClientProvider(
            server_url=gateway.mcp_url,
            client_metadata=metadata,
            storage=tokens,
            redirect_handler=self.redirect_handler,
            callback_handler=self.callback_handler,
        )


async def _whoami(tokens: MemoryTokenStorage, approval: ChromiumApproval, gateway: GatewayHandle, name: str) -> str:
    provider = approval.provider(gateway, tokens, name)
    async with asyncio.timeout(WAIT), oauth_mcp_client(gateway.mcp_url, provider) as client:
        result = await client.call_tool("whoami", {})
    return str(json.loads(result.content[0].text)["identity"]["x-gateway-client-id"])  # type: ignore[union-attr]


async def test_a_person_connects_two_clients_revokes_one_and_manages_an_api_key_in_chromium(
    gateway: GatewayHandle, clock: ManualClock
) -> None:
    async with chromium_page() as page, LoopbackReceiver().running() as receiver:
        # Sign up (the form works without JavaScript).
        await page.goto(gateway.url + "/signup")
        await page.get_by_label("Email").fill(EMAIL)
        await page.get_by_label("Password", exact=False).first.fill(TEST_PASSWORD)
        await page.get_by_label("Repeat the password").fill(TEST_PASSWORD)
        await page.get_by_role("button", name="Create account").click()
        await expect(page.get_by_role("heading", name="Your account")).to_be_visible()

        # Sign out, then log in again with the keyboard.
        await page.get_by_role("button", name="Sign out").click()
        await expect(page.get_by_role("heading", name="Sign in to your account")).to_be_visible()
        await page.get_by_label("Email").fill(EMAIL)
        await page.get_by_label("Password").fill(TEST_PASSWORD)
        await page.get_by_label("Password").press("Enter")
        await expect(page.get_by_role("heading", name="Your account")).to_be_visible()

        # Two MCP clients connect through the real OAuth flow, approved in this browser.
        laptop, server = MemoryTokenStorage(), MemoryTokenStorage()
        approval = ChromiumApproval(page, receiver, screenshot="consent.png")
        laptop_id = await _whoami(laptop, approval, gateway, "Claude Code (laptop)")
        approval.screenshot = None
        server_id = await _whoami(server, approval, gateway, "Build server")
        assert laptop_id != server_id

        await gateway.app[USAGE_HISTORY].flush()  # the chart's batched counts, written now rather than in 30 s
        await page.goto(gateway.url + "/account")
        await expect(page.get_by_role("img", name="Requests per day")).to_be_visible()
        apps = page.get_by_role("region", name="Authorized Apps")
        await expect(apps.get_by_text("Claude Code (laptop)")).to_be_visible()
        await expect(apps.get_by_text("Build server")).to_be_visible()
        await page.screenshot(path=artifacts_dir() / "dashboard.png", full_page=True)

        # Revoke the laptop: its next MCP call fails with 401; the server keeps working.
        await page.get_by_role("button", name="Revoke Claude Code (laptop)").click()
        await expect(page.get_by_role("status")).to_contain_text("disconnected")
        await expect(apps.get_by_text("Claude Code (laptop)")).to_have_count(0)
        clock.advance(CACHE_BOUND)
        assert laptop.tokens is not None
        assert (await post_mcp(gateway.url, bearer(laptop.tokens.access_token))).status == 401
        approval.allowed = False
        # The SDK's refresh is refused (the grant is gone), so it asks the person again, who declines.
        with pytest.raises(ExceptionGroup) as refused:
            await _whoami(laptop, approval, gateway, "Claude Code (laptop)")
        assert refused.group_contains(AuthorizationRefused)
        assert await _whoami(server, approval, gateway, "Build server") == server_id

        # An API key: created here, shown once, used by a client, revoked.
        await page.get_by_label("New key name").fill("ci runner")
        await page.get_by_role("button", name="Create key").click()
        key = await page.get_by_label("Your new API key").input_value()
        await expect(page.get_by_role("button", name="Copy to clipboard")).to_be_visible()
        await page.screenshot(path=artifacts_dir() / "api-key-created.png", full_page=True)
        async with asyncio.timeout(WAIT), streamable_session_client(gateway.mcp_url, {"X-API-Key": key}) as client:
            assert (await client.call_tool("echo", {"text": "hi"})).content
        await page.get_by_role("link", name="Back to your account").click()
        keys = page.get_by_role("region", name="API keys")
        await expect(keys.get_by_text(f"{key[:8]}…{key[-4:]}")).to_be_visible()
        assert key not in await page.content()
        await page.get_by_role("button", name="Revoke key ci runner").click()
        await expect(keys.get_by_text("No API key yet.")).to_be_visible()
        clock.advance(CACHE_BOUND)
        assert (await post_mcp(gateway.url, {"X-API-Key": key})).status == 401
