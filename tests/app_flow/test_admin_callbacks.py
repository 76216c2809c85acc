"""The admin API sets an API key's callback URLs (and, only when asked, the risky tokens-in-URL delivery)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.secrets_hashing import secret_hash
from gateway.storage.app_flow import KeyApp
from tests.support.dashboard import sign_in
from tests.support.gateway import GatewayHandle
from tests.support.oauth_browser import Browser

ADMIN = "root@example.com"


@pytest.fixture
async def admin_browser(gateway: GatewayHandle) -> AsyncIterator[Browser]:
    admin = await gateway.new_user(ADMIN)
    await gateway.storage.set_role(admin.id, "admin")
    async with Browser(gateway.url) as browser:
        await sign_in(browser, ADMIN)
        yield browser


async def _post(browser: Browser, path: str, body: object) -> tuple[int, Any]:
    sent = {"Origin": browser.origin, "Content-Type": "application/json"}
    async with browser.session.post(browser.origin + path, data=json.dumps(body), headers=sent) as response:
        return response.status, json.loads(await response.read())


async def test_an_admin_sets_a_keys_callback_urls_and_bad_ones_change_nothing(
    gateway: GatewayHandle, admin_browser: Browser
) -> None:
    key = await gateway.new_key(await gateway.new_user())
    row = await gateway.storage.get_api_key_by_hash(secret_hash(key))
    assert row is not None
    path = f"/admin/api/keys/{row.id}/callbacks"
    status, body = await _post(admin_browser, path, {"redirect_uris": ["https://app.example/cb"]})
    assert (status, body["redirect_uris"], body["tokens_in_url"]) == (200, ["https://app.example/cb"], False)
    assert await gateway.storage.get_key_app(row.id) == KeyApp(row.id, ("https://app.example/cb",))
    status, body = await _post(
        admin_browser, path, {"redirect_uris": ["https://app.example/cb"], "tokens_in_url": True}
    )
    assert status == 200
    assert "browser history" in body["warning"]
    for bad in ({"redirect_uris": ["http://app.example/cb"]}, {"redirect_uris": "x"}, {"tokens_in_url": "yes"}):
        status, body = await _post(admin_browser, path, bad)
        assert (status, body["error"]) == (400, "invalid_request")
    assert await gateway.storage.get_key_app(row.id) == KeyApp(row.id, ("https://app.example/cb",), True)
    status, _ = await _post(admin_browser, "/admin/api/keys/key_nope/callbacks", {"redirect_uris": []})
    assert status == 404
