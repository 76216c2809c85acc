"""The admin API over HTTP: who may call it, what it does, and what it audits (case 100)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.clock import ManualClock
from gateway.oauth.browser_sessions import SESSION_COOKIE
from tests.support.dashboard import page, sign_in
from tests.support.gateway import TEST_PASSWORD, GatewayHandle
from tests.support.oauth_browser import Browser
from tests.support.oauth_flows import bearer, obtain_tokens, post_mcp, register

ADMIN = "root@example.com"
ADA = "ada@example.com"
BOB = "bob@example.com"
CACHE_BOUND = 1.0


@pytest.fixture
async def admin_browser(gateway: GatewayHandle) -> AsyncIterator[Browser]:
    admin = await gateway.new_user(ADMIN)
    await gateway.storage.set_role(admin.id, "admin")
    async with Browser(gateway.url) as browser:
        await sign_in(browser, ADMIN)
        yield browser


@pytest.fixture
async def user_browser(gateway: GatewayHandle) -> AsyncIterator[Browser]:
    async with Browser(gateway.url) as browser:
        yield browser


async def _get(browser: Browser, path: str, **headers: str) -> tuple[int, Any]:
    async with browser.session.get(browser.origin + path, headers=headers, allow_redirects=False) as response:
        return response.status, json.loads(await response.read())


async def _post(browser: Browser, path: str, body: object = None, **headers: str) -> tuple[int, Any]:
    data = json.dumps(body if body is not None else {})
    sent = {"Origin": browser.origin, "Content-Type": "application/json", **headers}
    async with browser.session.post(browser.origin + path, data=data, headers=sent) as response:
        return response.status, json.loads(await response.read())


async def test_a_user_session_or_any_key_is_403_no_or_an_expired_admin_session_401_and_an_admin_200(
    gateway: GatewayHandle, admin_browser: Browser, user_browser: Browser, clock: ManualClock
) -> None:
    ada = await gateway.new_user(ADA)
    key = await gateway.new_key(ada)
    await sign_in(user_browser, ADA)
    assert (await _get(user_browser, "/admin/api/users"))[0] == 403
    assert (await _post(user_browser, f"/admin/api/users/{ada.id}/disable"))[0] == 403
    async with Browser(gateway.url) as anonymous:
        assert (await _get(anonymous, "/admin/api/users", **{"X-API-Key": key}))[0] == 403
        assert (await _get(anonymous, "/admin/api/users", **bearer(key)))[0] == 403
        assert (await _get(anonymous, "/admin/api/users"))[0] == 401
    # Even an administrator's own session does not turn a key into admin access.
    assert (await _get(admin_browser, "/admin/api/users", **{"X-API-Key": key}))[0] == 403

    status, body = await _get(admin_browser, "/admin/api/users")
    assert status == 200
    assert {u["email"] for u in body["users"]} == {ADMIN, ADA}
    assert all("password_hash" not in u for u in body["users"])

    clock.advance(gateway.config.oauth.login_session_idle_ttl + 1)
    assert (await _get(admin_browser, "/admin/api/users"))[0] == 401
    reloaded = await gateway.storage.get_user(ada.id)
    assert reloaded is not None
    assert reloaded.active


async def test_admin_mutations_need_a_same_origin_json_post(gateway: GatewayHandle, admin_browser: Browser) -> None:
    ada = await gateway.new_user(ADA)
    path = f"/admin/api/users/{ada.id}/disable"
    assert (await _post(admin_browser, path, Origin="https://attacker.example"))[0] == 403
    async with admin_browser.session.post(
        admin_browser.origin + path, data="x=1", headers={"Origin": admin_browser.origin}
    ) as response:
        assert response.status == 400
    async with admin_browser.session.get(admin_browser.origin + path) as response:
        assert response.status == 405
    reloaded = await gateway.storage.get_user(ada.id)
    assert reloaded is not None
    assert reloaded.active


async def test_an_admin_sees_a_users_apps_and_keys_and_revokes_by_user_client_and_key(
    gateway: GatewayHandle, admin_browser: Browser, user_browser: Browser, clock: ManualClock
) -> None:
    ada, bob = await gateway.new_user(ADA), await gateway.new_user(BOB)
    shared = await register(gateway.url, client_name="Shared tool")
    own = await register(gateway.url, client_name="Ada's own")
    ada_shared = (await obtain_tokens(shared, user_browser, ADA))["access_token"]
    ada_own = (await obtain_tokens(own, user_browser, ADA))["access_token"]
    async with Browser(gateway.url) as bob_browser:
        bob_shared = (await obtain_tokens(shared, bob_browser, BOB))["access_token"]
    ada_key, bob_key = await gateway.new_key(ada, name="a"), await gateway.new_key(bob, name="b")

    status, shown = await _get(admin_browser, f"/admin/api/users/{ada.id}")
    assert status == 200
    assert {a["name"] for a in shown["apps"]} == {"Shared tool", "Ada's own"}
    assert [k["name"] for k in shown["keys"]] == ["a"]
    assert ada_key not in json.dumps(shown)
    assert (await _get(admin_browser, "/admin/api/users/usr_nobody"))[0] == 404

    assert await _post(admin_browser, "/admin/api/clients/revoke", {"client_id": shared.client_id}) == (
        200,
        {"families": 2},
    )
    assert (await post_mcp(gateway.url, bearer(ada_shared))).status == 401
    assert (await post_mcp(gateway.url, bearer(bob_shared))).status == 401
    assert (await post_mcp(gateway.url, bearer(ada_own))).status == 200

    (bob_key_id,) = [k["id"] for k in (await _get(admin_browser, f"/admin/api/users/{bob.id}"))[1]["keys"]]
    assert (await _post(admin_browser, f"/admin/api/keys/{bob_key_id}/revoke"))[0] == 200
    assert (await _post(admin_browser, f"/admin/api/keys/{bob_key_id}/revoke"))[0] == 404
    assert (await post_mcp(gateway.url, {"X-API-Key": bob_key})).status == 401

    assert await _post(admin_browser, f"/admin/api/users/{ada.id}/revoke") == (200, {"families": 1, "keys": 1})
    clock.advance(CACHE_BOUND)
    assert (await post_mcp(gateway.url, bearer(ada_own))).status == 401
    assert (await post_mcp(gateway.url, {"X-API-Key": ada_key})).status == 401


async def test_disabling_a_user_refuses_their_keys_tokens_and_sign_in_and_every_mutation_is_audited(
    gateway: GatewayHandle,
    admin_browser: Browser,
    user_browser: Browser,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ada = await gateway.new_user(ADA)
    token = (await obtain_tokens(await register(gateway.url), user_browser, ADA))["access_token"]
    key = await gateway.new_key(ada)
    admin = await gateway.storage.get_user_by_email(ADMIN)
    assert admin is not None
    with caplog.at_level(logging.INFO, logger="gateway.audit"):
        assert (await _post(admin_browser, f"/admin/api/users/{ada.id}/disable"))[0] == 200
        clock.advance(CACHE_BOUND)
        assert (await post_mcp(gateway.url, bearer(token))).status == 401
        assert (await post_mcp(gateway.url, {"X-API-Key": key})).status == 401
        async with Browser(gateway.url) as fresh:
            form = page(await fresh.open(gateway.url + "/account/login"))
            refused = page(await fresh.submit(form, "/account/login", email=ADA, password=TEST_PASSWORD))
            assert refused.status == 401
        assert (await _post(admin_browser, f"/admin/api/users/{ada.id}/enable"))[0] == 200
        assert (await post_mcp(gateway.url, {"X-API-Key": key})).status == 200

    events = [(r.audit, r.actor, getattr(r, "user_id", None)) for r in caplog.records if hasattr(r, "audit")]
    assert ("user.disabled", f"admin:{admin.id}", ada.id) in events
    assert ("user.enabled", f"admin:{admin.id}", ada.id) in events
    session_value = next(c.value for c in admin_browser.session.cookie_jar if c.key == SESSION_COOKIE)
    for record in caplog.records:
        text = json.dumps(record.__dict__, default=str)
        assert not any(secret in text for secret in (key, token, session_value))
