"""The dashboard's key form takes the app flow's callback URLs (one per line) and, only when ticked, the risky
delivery of tokens in the callback URL, whose risk the form states."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest

from gateway.secrets_hashing import secret_hash
from gateway.storage.app_flow import KeyApp
from tests.support.dashboard import account, create_key, csrf, keys, post, sign_in
from tests.support.gateway import GatewayHandle
from tests.support.oauth_browser import Browser

ADA = "ada@example.com"


@pytest.fixture
async def browser(gateway: GatewayHandle) -> AsyncIterator[Browser]:
    async with Browser(gateway.url) as b:
        yield b


async def test_a_key_created_on_the_dashboard_carries_the_callback_urls_given(
    gateway: GatewayHandle, browser: Browser
) -> None:
    await gateway.new_user(ADA)
    form = await sign_in(browser, ADA)
    assert "tokens themselves in the callback URL" in form.text
    assert "browser history" in form.text
    key = await create_key(browser, "app", redirect_uris="https://app.example/cb\r\nhttp://127.0.0.1/cb\r\n")
    row = await gateway.storage.get_api_key_by_hash(secret_hash(key))
    assert row is not None
    assert await gateway.storage.get_key_app(row.id) == KeyApp(
        row.id, ("https://app.example/cb", "http://127.0.0.1/cb")
    )
    plain = await create_key(browser, "plain")
    plain_row = await gateway.storage.get_api_key_by_hash(secret_hash(plain))
    assert plain_row is not None
    assert await gateway.storage.get_key_app(plain_row.id) is None


async def test_a_bad_callback_url_on_the_dashboard_is_refused_and_creates_no_key(
    gateway: GatewayHandle, browser: Browser
) -> None:
    await gateway.new_user(ADA)
    listed = await sign_in(browser, ADA)
    request_id = re.search(r'name="request_id" value="([^"]+)"', listed.text)
    assert request_id is not None
    fields = {
        "csrf": csrf(listed),
        "request_id": request_id.group(1),
        "name": "k",
        "redirect_uris": "http://a.example/",
    }
    refused = await post(browser, "/account/keys", fields)
    assert refused.status == 400
    assert "Callback URL" in refused.text
    assert keys(await account(browser)) == {}
