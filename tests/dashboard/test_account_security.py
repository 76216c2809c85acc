"""Dashboard accounts over HTTP: sign-up, sessions, CSRF and methods, keys, password, usage (cases 97, 101)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from yarl import URL

from gateway.clock import ManualClock
from gateway.oauth.browser_sessions import SESSION_COOKIE
from gateway.storage import Storage
from gateway.usage_history import USAGE_HISTORY
from tests.support.dashboard import account, apps, create_key, csrf, keys, page, post, sign_in
from tests.support.gateway import TEST_PASSWORD, GatewayHandle, running_gateway
from tests.support.oauth_browser import Browser
from tests.support.oauth_flows import bearer, obtain_tokens, post_mcp, register, request, set_cookie
from tests.support.observed_flow import samples, scrape, value
from tests.support.upstream import UpstreamProcess

ADA = "ada@example.com"
NEW_PASSWORD = "a much longer new password"
CACHE_BOUND = 1.0
"""A credential validated just before its revocation may be honoured this long (the validation cache)."""


async def test_signing_up_signs_in_and_shows_the_dashboard(gateway: GatewayHandle, browser: Browser) -> None:
    form = page(await browser.open(gateway.url + "/signup"))
    result = page(
        await browser.submit(
            form, "/signup", email="new@example.com", password=TEST_PASSWORD, password_again=TEST_PASSWORD
        )
    )
    assert result.status == 200
    assert "Your account" in result.text
    assert "new@example.com" in result.text
    assert await gateway.storage.get_user_by_email("new@example.com") is not None


async def test_signing_up_twice_with_one_email_or_a_short_password_is_refused(
    gateway: GatewayHandle, browser: Browser
) -> None:
    await gateway.new_user(ADA)
    form = page(await browser.open(gateway.url + "/signup"))
    taken = page(await browser.submit(form, "/signup", email=ADA, password=TEST_PASSWORD, password_again=TEST_PASSWORD))
    assert taken.status == 400
    assert "cannot be used" in taken.text
    short = page(await browser.submit(form, "/signup", email="x@example.com", password="short", password_again="short"))
    assert short.status == 400
    assert "longer password" in short.text


@pytest.fixture
async def closed_gateway(sqlite_storage: Storage, upstream: UpstreamProcess) -> AsyncIterator[GatewayHandle]:
    overrides = {"accounts": {"signup_enabled": False}}
    async with running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url, overrides=overrides) as gw:
        yield gw


async def test_sign_up_switched_off_answers_404_and_the_sign_in_page_does_not_offer_it(
    closed_gateway: GatewayHandle,
) -> None:
    assert (await request("GET", closed_gateway.url + "/signup")).status == 404
    assert (await request("POST", closed_gateway.url + "/signup", data={"email": "a@b.c"})).status in (403, 404)
    login = await request("GET", closed_gateway.url + "/account/login")
    assert login.status == 200
    assert "/signup" not in login.text


async def test_the_session_cookie_is_host_prefixed_secure_httponly_lax_and_renewed_at_sign_in(
    gateway: GatewayHandle, browser: Browser
) -> None:
    await gateway.new_user(ADA)
    form = page(await browser.open(gateway.url + "/account/login"))
    fields = {**form.hidden(), "email": ADA, "password": TEST_PASSWORD}
    first = await post(browser, "/account/login", fields)
    value, attributes = set_cookie(first, SESSION_COOKIE)
    assert {"secure", "httponly", "samesite=lax", "path=/"} <= attributes
    assert not any(a.startswith("domain") for a in attributes)
    browser.session.cookie_jar.update_cookies({SESSION_COOKIE: value})
    second = await post(browser, "/account/login", fields)
    renewed, _ = set_cookie(second, SESSION_COOKIE)
    assert renewed != value
    # The old id no longer signs anyone in.
    old = await request("GET", gateway.url + "/account", cookies={SESSION_COOKIE: value})
    assert old.status == 303
    assert old.headers["Location"] == "/account/login"


async def test_pages_forbid_framing_and_inline_script(gateway: GatewayHandle, browser: Browser) -> None:
    await gateway.new_user(ADA)
    await sign_in(browser, ADA)
    async with browser.session.get(gateway.url + "/account") as response:
        csp = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp
        assert "default-src 'none'" in csp
        assert "unsafe-inline" not in csp
        assert "script-src" not in csp
        assert response.headers["Cache-Control"] == "no-store"
        assert "<script" not in await response.text()


async def test_an_idle_session_ends_and_a_logged_out_cookie_cannot_be_reused(
    gateway: GatewayHandle, browser: Browser, clock: ManualClock
) -> None:
    await gateway.new_user(ADA)
    page_before = await sign_in(browser, ADA)
    cookie = browser.session.cookie_jar.filter_cookies(URL(gateway.url))[SESSION_COOKIE].value
    clock.advance(gateway.config.oauth.login_session_idle_ttl + 1)
    idle = await request("GET", gateway.url + "/account", cookies={SESSION_COOKIE: cookie})
    assert idle.status == 303
    assert idle.headers["Location"] == "/account/login"
    assert (await post(browser, "/account/apps/revoke-all", {"csrf": csrf(page_before)})).status == 401

    await sign_in(browser, ADA)
    signed_in = await account(browser)
    cookie = browser.session.cookie_jar.filter_cookies(URL(gateway.url))[SESSION_COOKIE].value
    assert (await post(browser, "/logout", {"csrf": csrf(signed_in)})).status == 303
    reused = await request("GET", gateway.url + "/account", cookies={SESSION_COOKIE: cookie})
    assert reused.status == 303
    assert reused.headers["Location"] == "/account/login"


async def test_an_absolute_timeout_ends_a_session_in_use(
    gateway: GatewayHandle, browser: Browser, clock: ManualClock
) -> None:
    await gateway.new_user(ADA)
    await sign_in(browser, ADA)
    step = gateway.config.oauth.login_session_idle_ttl / 2
    for _ in range(int(gateway.config.oauth.login_session_absolute_ttl / step) + 1):
        clock.advance(step)
        await browser.open(gateway.url + "/account")
    assert 'action="/account/login"' in page(await browser.open(gateway.url + "/account")).text


async def test_revoke_by_get_is_405_without_csrf_403_and_cross_site_403_and_nothing_is_revoked(
    gateway: GatewayHandle, browser: Browser
) -> None:
    await gateway.new_user(ADA)
    client = await register(gateway.url, client_name="Target")
    token = (await obtain_tokens(client, browser, ADA))["access_token"]
    listed = await account(browser)
    path = f"/account/apps/{apps(listed)['Target']}/revoke"
    async with browser.session.get(gateway.url + path, allow_redirects=False) as response:
        assert response.status == 405
    assert (await post(browser, path, {})).status == 403
    assert (await post(browser, path, {"csrf": "forged"})).status == 403
    cross = await post(browser, path, {"csrf": csrf(listed)}, Origin="https://attacker.example")
    assert cross.status == 403
    fetch_site = await post(browser, path, {"csrf": csrf(listed)}, **{"Sec-Fetch-Site": "cross-site"})
    assert fetch_site.status == 403
    assert (await post_mcp(gateway.url, bearer(token))).status == 200
    assert list(apps(await account(browser))) == ["Target"]


async def test_an_api_key_is_shown_once_listed_by_prefix_and_last_four_used_and_revoked(
    gateway: GatewayHandle, browser: Browser, clock: ManualClock
) -> None:
    await gateway.new_user(ADA)
    await sign_in(browser, ADA)
    key = await create_key(browser, "laptop", expires_in_days="30")
    assert re.fullmatch(r"mgw_[0-9A-Za-z]{38}", key)
    listed = await account(browser)
    assert key not in listed.text
    assert f"{key[:8]}…{key[-4:]}" in listed.text
    assert "laptop" in keys(listed)
    assert (await post_mcp(gateway.url, {"X-API-Key": key})).status == 200
    reply = await post(browser, f"/account/keys/{keys(listed)['laptop']}/revoke", {"csrf": csrf(listed)})
    assert reply.status == 303
    clock.advance(CACHE_BOUND)
    assert (await post_mcp(gateway.url, {"X-API-Key": key})).status == 401
    assert keys(await account(browser)) == {}


async def test_the_create_key_form_sent_twice_makes_one_key_and_says_so(
    gateway: GatewayHandle, browser: Browser
) -> None:
    await gateway.new_user(ADA)
    listed = await sign_in(browser, ADA)
    request_id = re.search(r'name="request_id" value="([^"]+)"', listed.text)
    assert request_id is not None
    fields = {"csrf": csrf(listed), "request_id": request_id.group(1), "name": "twice"}
    first = await post(browser, "/account/keys", fields)
    assert first.status == 200
    assert "mgw_" in first.text
    again = await post(browser, "/account/keys", fields)  # a reload of the result page
    assert again.status == 409
    assert "already created" in again.text
    assert "mgw_" not in again.text
    assert list(keys(await account(browser))) == ["twice"]
    fresh = await account(browser)  # a new render of the form is a new key
    assert re.search(r'name="request_id" value="([^"]+)"', fresh.text).group(1) != request_id.group(1)  # type: ignore[union-attr]


async def test_a_key_with_a_bad_name_or_expiry_is_refused(gateway: GatewayHandle, browser: Browser) -> None:
    await gateway.new_user(ADA)
    listed = await sign_in(browser, ADA)
    assert (await post(browser, "/account/keys", {"csrf": csrf(listed), "name": ""})).status == 400
    bad_days = await post(browser, "/account/keys", {"csrf": csrf(listed), "name": "k", "expires_in_days": "-1"})
    assert bad_days.status == 400
    assert keys(await account(browser)) == {}


async def test_changing_the_password_ends_other_sessions_and_optionally_revokes_tokens(
    gateway: GatewayHandle, browser: Browser, other_browser: Browser, clock: ManualClock
) -> None:
    ada = await gateway.new_user(ADA)
    client = await register(gateway.url, client_name="Kept")
    token = (await obtain_tokens(client, browser, ADA))["access_token"]
    key = await gateway.new_key(ada)
    await sign_in(other_browser, ADA)
    listed = await account(browser)
    fields = {"csrf": csrf(listed), "current_password": TEST_PASSWORD}
    wrong = await post(browser, "/account/password", {**fields, "current_password": "nope", "new_password": "x"})
    assert wrong.status == 400
    changed = await post(
        browser, "/account/password", {**fields, "new_password": NEW_PASSWORD, "new_password_again": NEW_PASSWORD}
    )
    assert changed.status == 303
    assert 'action="/account/login"' in page(await other_browser.open(gateway.url + "/account")).text
    assert "Your account" in (await account(browser)).text  # this browser got a fresh session
    assert (await post_mcp(gateway.url, bearer(token))).status == 200  # tokens kept unless asked
    listed = await account(browser)
    fields = {"csrf": csrf(listed), "current_password": NEW_PASSWORD, "revoke_tokens": "yes"}
    newer = TEST_PASSWORD + "!"
    again = await post(browser, "/account/password", {**fields, "new_password": newer, "new_password_again": newer})
    assert again.status == 303
    clock.advance(CACHE_BOUND)
    assert (await post_mcp(gateway.url, bearer(token))).status == 401
    assert (await post_mcp(gateway.url, {"X-API-Key": key})).status == 401


async def test_guessing_the_current_password_meets_the_sign_in_budget(
    sqlite_storage: Storage, upstream: UpstreamProcess
) -> None:
    overrides = {"limits": {"protective": {"login_failures_per_account": 3}}}
    async with running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url, overrides=overrides) as gw:
        await gw.new_user("guessed@example.com")
        async with Browser(gw.url) as browser:
            listed = await sign_in(browser, "guessed@example.com")
            fields = {"csrf": csrf(listed), "new_password": NEW_PASSWORD, "new_password_again": NEW_PASSWORD}
            guesses = [
                (await post(browser, "/account/password", {**fields, "current_password": f"guess {i}"})).status
                for i in range(3)
            ]
            assert guesses == [400, 400, 400]
            refused = await post(browser, "/account/password", {**fields, "current_password": TEST_PASSWORD})
            assert refused.status == 429
            assert int(refused.headers["Retry-After"]) >= 1
        assert await gw.storage.get_user_by_email("guessed@example.com") is not None
        async with Browser(gw.url) as fresh:
            locked = page(await fresh.open(gw.url + "/account/login"))
            reply = await fresh.submit(locked, "/account/login", email="guessed@example.com", password=TEST_PASSWORD)
            assert page(reply).status == 429  # the same account budget as sign-in


async def test_usage_shows_the_plan_current_counts_and_a_chart_of_recent_days(
    gateway: GatewayHandle, browser: Browser
) -> None:
    ada = await gateway.new_user(ADA)
    key = await gateway.new_key(ada)
    for _ in range(3):
        assert (await post_mcp(gateway.url, {"X-API-Key": key})).status == 200
    await gateway.app[USAGE_HISTORY].flush()
    listed = await sign_in(browser, ADA)
    assert "Plan: <strong>free</strong>" in listed.text
    assert re.search(r"<td>minute</td><td>3</td><td>60</td>", listed.text), listed.text
    assert "<svg" in listed.text
    assert 'role="img"' in listed.text
    assert "3 in all, at most 3 in a day" in listed.text
    assert listed.text.count("<rect ") == gateway.config.accounts.usage_chart_days


async def test_one_address_is_limited_to_a_few_sign_ups_an_hour(gateway: GatewayHandle, browser: Browser) -> None:
    signups_per_address = gateway.config.limits.protective.signups_per_address
    statuses = []
    for i in range(signups_per_address + 1):
        async with Browser(gateway.url) as fresh:
            form = page(await fresh.open(gateway.url + "/signup"))
            fields = {"email": f"u{i}@example.com", "password": TEST_PASSWORD, "password_again": TEST_PASSWORD}
            statuses.append(page(await fresh.submit(form, "/signup", **fields)).status)
    assert statuses == [200] * signups_per_address + [429]
    assert await gateway.storage.get_user_by_email(f"u{signups_per_address}@example.com") is None


@pytest.mark.parametrize(
    "path",
    ["/logout", "/account/password", "/account/keys", "/account/apps/revoke-all", "/account/keys/key_x/revoke"],
)
async def test_every_state_changing_route_refuses_get_and_a_post_without_the_csrf_token(
    gateway: GatewayHandle, browser: Browser, path: str
) -> None:
    await gateway.new_user(ADA)
    await sign_in(browser, ADA)
    async with browser.session.get(gateway.url + path, allow_redirects=False) as response:
        assert response.status == 405
    fields = {"name": "k", "current_password": TEST_PASSWORD, "new_password": NEW_PASSWORD}
    assert (await post(browser, path, {**fields, "new_password_again": NEW_PASSWORD})).status == 403
    assert "Your account" in (await account(browser)).text  # still signed in: logout refused too
    assert keys(await account(browser)) == {}


async def test_dashboard_sign_ins_are_counted_and_audited_like_oauth_sign_ins(
    gateway: GatewayHandle, browser: Browser, caplog: pytest.LogCaptureFixture
) -> None:
    await gateway.new_user("counted@example.com")
    before = samples(await scrape(gateway.url))
    form = page(await browser.open(gateway.url + "/account/login"))
    wrong = await post(browser, "/account/login", {**form.hidden(), "email": "counted@example.com", "password": "nope"})
    assert wrong.status == 401
    with caplog.at_level("INFO", logger="gateway.audit"):
        await sign_in(browser, "counted@example.com")
    after = samples(await scrape(gateway.url))
    for outcome in ("failed", "succeeded"):
        moved = value(after, "gateway_logins_total", outcome=outcome) - value(
            before, "gateway_logins_total", outcome=outcome
        )
        assert moved == 1, outcome
    [event] = [r for r in caplog.records if getattr(r, "audit", None) == "login.succeeded"]
    assert event.reason == "dashboard"
    assert getattr(event, "client_id", None) is None
