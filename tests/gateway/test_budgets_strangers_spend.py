"""Issue 11 item 2: a stranger's failures cost the stranger, never the victim. For each budget a stranger
could spend (token and revoke per client, CIMD fetches per document, sign-in per account, registration for
everyone), the stranger's requests get 429 while the real user's succeed, on budgets shared through Redis by
two replicas."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web

from gateway.clock import ManualClock
from gateway.config import GatewayConfig, LimitsConfig, ProtectiveLimitsConfig
from gateway.housekeeping import interval as housekeeping_interval
from gateway.housekeeping import sweep
from gateway.metrics import Metrics
from gateway.storage import Storage
from gateway.throttle import MemoryBudgets, ProtectiveLimits
from tests.gateway.test_protective_limits import PROXY_PEER, REDIS_URL, shared, throttled, token_request
from tests.support.gateway import TEST_PASSWORD, UNUSED_UPSTREAM, GatewayHandle, running_gateway
from tests.support.https_server import make_local_ca, serve_https
from tests.support.oauth_browser import Browser
from tests.support.oauth_flows import (
    EMAIL,
    FORM,
    REDIRECT_URI,
    OAuthApp,
    Reply,
    approve,
    is_login,
    login_post,
    new_pkce,
    obtain_tokens,
    query_url,
    register,
    request,
    sign_in_page,
)

STRANGER = "198.51.100.66"
VICTIM = "192.0.2.10"


@contextlib.asynccontextmanager
async def replicas(
    storage: Storage, prefix: str, **protective: int
) -> AsyncIterator[tuple[GatewayHandle, GatewayHandle]]:
    """Two replicas sharing one Redis budget (``limits.protective`` set from ``protective``)."""
    overrides = shared(prefix, REDIS_URL, **protective)
    async with (
        running_gateway(storage=storage, upstream_url=UNUSED_UPSTREAM, overrides=overrides) as one,
        running_gateway(storage=storage, upstream_url=UNUSED_UPSTREAM, overrides=overrides) as two,
    ):
        await one.new_user(EMAIL)
        yield one, two


async def post_from(url: str, fields: dict[str, str], address: str) -> Reply:
    headers = {"Content-Type": FORM, "X-Forwarded-For": address}
    return await request("POST", url, data=urlencode(fields), headers=headers)


# --- /token and /revoke: a public client id is no budget strangers can spend ---


@pytest.mark.redis
async def test_a_stranger_spending_a_public_clients_token_failures_gets_429_while_its_users_still_exchange_and_refresh(
    sqlite_storage: Storage, quota_prefix: str
):
    async with replicas(sqlite_storage, quota_prefix, token_per_client=3) as (one, two):
        app = await register(one.url)
        async with Browser(one.url) as browser:
            pkce = new_pkce()
            code = (await approve(browser, app.authorization_url(pkce), EMAIL)).params["code"]
            refresh_token = (await obtain_tokens(app, browser, EMAIL))["refresh_token"]
        statuses = [(await token_request(gw, app.client_id, STRANGER)).status for gw in (one, two) * 3]
        assert statuses == [400, 400, 400, 429, 429, 429]  # the stranger's failures, across both replicas
        # The app's users, from their own addresses, on either replica: code exchange and refresh still work.
        other_user = OAuthApp(two.url, app.client_id, app.redirect_uri)
        assert (await other_user.exchange(code, pkce)).status == 200
        refreshed = await post_from(
            one.url + "/token",
            {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": app.client_id},
            VICTIM,
        )
        assert refreshed.status == 200, refreshed.text
        # Even from the stranger's own address a valid refresh token is never refused by the per-client budget.
        again = await post_from(
            two.url + "/token",
            {
                "grant_type": "refresh_token",
                "refresh_token": refreshed.json()["refresh_token"],
                "client_id": app.client_id,
            },
            STRANGER,
        )
        assert again.status == 200, again.text
        assert (await token_request(one, app.client_id, VICTIM)).status == 400  # the victim's address has its own
        assert throttled(one, "token") + throttled(two, "token") == 3


@pytest.mark.redis
async def test_a_stranger_spending_a_clients_revocation_budget_gets_429_while_its_users_still_revoke(
    sqlite_storage: Storage, quota_prefix: str
):
    async with replicas(sqlite_storage, quota_prefix, revoke_per_client=2) as (one, two):
        app = await register(one.url)
        async with Browser(one.url) as browser:
            tokens = await obtain_tokens(app, browser, EMAIL)
        bogus = {"token": "gwat_unknown", "client_id": app.client_id}
        statuses = [(await post_from(gw.url + "/revoke", bogus, STRANGER)).status for gw in (one, two, one, two)]
        assert statuses == [200, 200, 429, 429]
        # The stranger's address may still revoke what its client really owns: revocation never waits.
        mine = {"token": tokens["access_token"], "client_id": app.client_id}
        assert (await post_from(two.url + "/revoke", mine, STRANGER)).status == 200
        assert (await post_from(one.url + "/revoke", bogus, VICTIM)).status == 200
        mine = {"token": tokens["refresh_token"], "client_id": app.client_id}
        assert (await post_from(one.url + "/revoke", mine, VICTIM)).status == 200
        refreshed = await post_from(
            one.url + "/token",
            {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": app.client_id},
            VICTIM,
        )
        assert refreshed.json()["error"] == "invalid_grant"  # the revocation happened


# --- /login: five wrong passwords lock the stranger's address, not the account ---


@pytest.mark.redis
async def test_a_strangers_wrong_passwords_lock_only_their_address_and_the_owner_still_signs_in(
    sqlite_storage: Storage, quota_prefix: str
):
    async with replicas(
        sqlite_storage, quota_prefix, login_failures_per_account=3, login_failures_per_account_total=100
    ) as (one, two):
        app = await register(one.url)
        async with Browser(one.url) as stranger:
            page = await sign_in_page(stranger, app.authorization_url(new_pkce()))
            statuses = [
                (await login_post(stranger, page, EMAIL, "wrong password!", **{"X-Forwarded-For": STRANGER})).status
                for _ in range(5)
            ]
            # Even the right password is refused from the address that spent the account's budget.
            locked = await login_post(stranger, page, EMAIL, TEST_PASSWORD, **{"X-Forwarded-For": STRANGER})
        assert statuses == [401, 401, 401, 429, 429]
        assert locked.status == 429
        async with Browser(two.url) as owner:
            page = await sign_in_page(
                owner, OAuthApp(two.url, app.client_id, app.redirect_uri).authorization_url(new_pkce())
            )
            signed_in = await login_post(owner, page, EMAIL, TEST_PASSWORD, **{"X-Forwarded-For": VICTIM})
        assert signed_in.status == 303, signed_in.text
        assert signed_in.headers["Location"].startswith("/consent?")


@pytest.mark.redis
async def test_guesses_from_many_addresses_slow_to_one_per_address_but_never_lock_the_owner_out(
    sqlite_storage: Storage, quota_prefix: str
):
    async with replicas(
        sqlite_storage, quota_prefix, login_failures_per_account=5, login_failures_per_account_total=4
    ) as (one, two):
        app = await register(one.url)
        async with Browser(one.url) as botnet:
            page = await sign_in_page(botnet, app.authorization_url(new_pkce()))
            spread = [
                (
                    await login_post(botnet, page, EMAIL, "wrong password!", **{"X-Forwarded-For": f"203.0.113.{i}"})
                ).status
                for i in range(4)
            ]
            assert spread == [401] * 4  # the account's total is now spent
            fresh = [
                (await login_post(botnet, page, EMAIL, "wrong password!", **{"X-Forwarded-For": "203.0.113.99"})).status
                for _ in range(2)
            ]
            assert fresh == [401, 429]  # one attempt per address and window from now on
        async with Browser(two.url) as owner:
            page = await sign_in_page(
                owner, OAuthApp(two.url, app.client_id, app.redirect_uri).authorization_url(new_pkce())
            )
            signed_in = await login_post(owner, page, EMAIL, TEST_PASSWORD, **{"X-Forwarded-For": VICTIM})
        assert signed_in.status == 303, signed_in.text


@pytest.mark.redis
async def test_the_dashboard_sign_in_locks_a_strangers_address_and_not_the_account(
    sqlite_storage: Storage, quota_prefix: str
):
    async with replicas(sqlite_storage, quota_prefix, login_failures_per_account=3) as (one, two):

        async def dashboard_sign_in(gw: GatewayHandle, password: str, address: str) -> int:
            async with Browser(gw.url) as browser:
                page = await browser.open(gw.url + "/account/login")
                fields = {**page.hidden(), "email": EMAIL, "password": password}  # type: ignore[union-attr]
                headers = {"Origin": gw.url, "X-Forwarded-For": address}
                async with browser.session.post(
                    gw.url + "/account/login", data=fields, headers=headers, allow_redirects=False
                ) as response:
                    return response.status

        statuses = [await dashboard_sign_in(gw, "wrong password!", STRANGER) for gw in (one, two, one, two)]
        assert statuses == [401, 401, 401, 429]
        assert await dashboard_sign_in(two, TEST_PASSWORD, STRANGER) == 429
        assert await dashboard_sign_in(one, TEST_PASSWORD, VICTIM) == 303


# --- /register: strangers cannot close registration for everyone ---


async def register_from(gw: GatewayHandle, address: str, name: str) -> Reply:
    body = {"redirect_uris": [REDIRECT_URI], "client_name": name, "token_endpoint_auth_method": "none"}
    headers = {"Content-Type": "application/json", "X-Forwarded-For": address}
    return await request("POST", gw.url + "/register", data=json.dumps(body), headers=headers)


@pytest.fixture
async def registration(
    sqlite_storage: Storage, quota_prefix: str
) -> AsyncIterator[tuple[GatewayHandle, GatewayHandle]]:
    overrides = shared(quota_prefix, REDIS_URL)
    overrides["oauth"] = {
        "registration": {"max_per_address_per_hour": 3, "max_per_hour": 6, "max_per_address_per_hour_when_busy": 1}
    }
    async with (
        running_gateway(storage=sqlite_storage, upstream_url=UNUSED_UPSTREAM, overrides=overrides) as one,
        running_gateway(storage=sqlite_storage, upstream_url=UNUSED_UPSTREAM, overrides=overrides) as two,
    ):
        yield one, two


@pytest.mark.redis
async def test_strangers_spending_the_overall_registration_budget_do_not_close_registration_for_a_newcomer(
    registration: tuple[GatewayHandle, GatewayHandle],
):
    one, two = registration
    flood = [
        (await register_from(gw, f"203.0.113.{i % 2}", f"flood {i}")).status for i, gw in enumerate((one, two) * 4)
    ]
    # Three each from two addresses spend the overall budget (6); past that each address gets its own
    # small allowance (1), and then its per-address budget (3) is spent anyway.
    assert flood == [201] * 6 + [429, 429]
    assert (await register_from(one, "203.0.113.7", "third stranger")).status == 201  # when-busy allowance
    assert (await register_from(two, "203.0.113.7", "third stranger again")).status == 429
    newcomer = await register_from(two, VICTIM, "Real app")
    assert newcomer.status == 201, newcomer.text
    # The IPv6 addresses of one /64 are one address.
    assert (await register_from(one, "2001:db8:1:2::1", "v6 a")).status == 201
    assert (await register_from(one, "2001:db8:1:2::ffff", "v6 b")).status == 429
    assert (await register_from(one, "2001:db8:1:3::1", "v6 c")).status == 201


@pytest.mark.redis
async def test_identical_registrations_return_the_same_client(registration: tuple[GatewayHandle, GatewayHandle]):
    one, two = registration
    first, second = await register_from(one, VICTIM, "Same app"), await register_from(two, VICTIM, "Same app")
    assert first.status == second.status == 201
    assert first.json()["client_id"] == second.json()["client_id"]


# --- CIMD: an unlisted redirect_uri never costs the app's users their sign-in ---


def document(url: str) -> dict[str, Any]:
    return {
        "client_id": url,
        "client_name": "Metadata App",
        "redirect_uris": [REDIRECT_URI],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    }


@pytest.mark.redis
async def test_unlisted_redirect_uris_force_no_refetch_and_a_spent_fetch_budget_still_serves_the_cached_document(
    sqlite_storage: Storage, quota_prefix: str, tmp_path: Path
):
    ca = make_local_ca(tmp_path / "tls")
    fetched: list[str] = []
    where: list[str] = []

    async def serve(request: web.Request) -> web.Response:
        fetched.append(request.path)
        return web.json_response(document(where[0]), headers={"Cache-Control": "max-age=100"})

    site = web.Application()
    site.router.add_get("/app.json", serve)
    clock = ManualClock()
    async with serve_https(site, ca) as https:
        doc_url = https.url("/app.json", host="localhost")
        where.append(doc_url)
        overrides = {
            **shared(quota_prefix, REDIS_URL, cimd_fetches_per_document=2, authorize_per_address=1000),
            "oauth": {"cimd": {"allow_private_addresses": True, "ca_file": str(ca.ca_path), "cache_min_ttl": 60}},
        }
        async with running_gateway(
            storage=sqlite_storage, upstream_url=UNUSED_UPSTREAM, overrides=overrides, clock=clock
        ) as gw:
            app = OAuthApp(gw.url, doc_url, REDIRECT_URI)

            async def stranger(i: int) -> Reply:
                url = query_url(
                    gw.url + "/authorize", {"client_id": doc_url, "redirect_uri": f"https://evil.example/{i}"}
                )
                return await request("GET", url, headers={"X-Forwarded-For": f"203.0.113.{i}"})

            async def sign_in() -> bool:
                async with Browser(gw.url) as browser:
                    return is_login(await browser.open(app.authorization_url(new_pkce())))

            assert await sign_in()  # fetch 1
            assert [(await stranger(i)).status for i in range(20)] == [400] * 20
            assert len(fetched) == 1  # a fresh copy is not re-fetched for unlisted redirect URIs
            clock.advance(61)
            assert [(await stranger(i)).status for i in range(20, 40)] == [400] * 20
            assert len(fetched) == 2  # once per cache_min_ttl: the document's fetch budget (2) is now spent
            assert await sign_in()
            clock.advance(100)  # the copy expired; the budget is spent, so the expired copy serves
            assert await sign_in()
            assert throttled(gw, "cimd") == 1
            assert len(fetched) == 2
            page = await stranger(99)
            assert page.status == 400
            assert "not registered" in page.text


# --- the reaper: a stranger's registrations that never authorize go soon ---


async def test_registrations_that_never_authorize_are_swept_after_the_short_unused_client_ttl(
    sqlite_storage: Storage,
):
    clock = ManualClock()
    overrides = {"oauth": {"registration": {"unused_client_ttl": 600}}}
    async with running_gateway(
        storage=sqlite_storage, upstream_url=UNUSED_UPSTREAM, overrides=overrides, clock=clock
    ) as gw:
        assert housekeeping_interval(gw.app) == 150  # a quarter of the TTL, so a client lives at most 1.25 TTL
        await gw.new_user(EMAIL)
        used = await register(gw.url)
        unused = [(await register(gw.url, client_name=f"flood {i}")).client_id for i in range(3)]
        async with Browser(gw.url) as browser:
            await obtain_tokens(used, browser, EMAIL)
        clock.advance(601)
        assert (await sweep(gw.app))["clients"] == 3
        assert all([await sqlite_storage.get_client(client_id) is None for client_id in unused])
        assert await sqlite_storage.get_client(used.client_id) is not None


def test_the_default_unused_client_ttl_is_a_day():
    assert GatewayConfig().oauth.registration.unused_client_ttl == 24 * 3600


# --- growing delays: a guesser who waits out one window meets a longer one ---


async def test_a_guessers_wait_grows_from_the_window_to_four_then_sixteen_windows_and_a_success_clears_it():
    clock = ManualClock()
    config = GatewayConfig(limits=LimitsConfig(protective=ProtectiveLimitsConfig(login_failures_per_account_total=100)))
    limits = ProtectiveLimits(MemoryBudgets(clock), config, Metrics(), "gw:t")

    async def guesses(n: int) -> list[float]:
        return [await limits.login_attempt("ada@example.com", STRANGER) for _ in range(n)]

    assert await guesses(6) == [0] * 5 + [900]
    clock.advance(900)
    waits = await guesses(6)
    assert waits[:5] == [0] * 5
    assert waits[5] == 3600 - 900  # ten in the hour: wait for the hour to end
    clock.advance(2700)
    assert await guesses(6) == [0] * 5 + [900]
    clock.advance(900)
    waits = await guesses(6)
    assert waits[:5] == [0] * 5
    assert waits[5] == 14_400 - 4500  # twenty in four hours: wait for the four hours to end
    assert await limits.login_attempt("ada@example.com", VICTIM) == 0  # the owner, from their address
    await limits.login_succeeded("ada@example.com", VICTIM)
    # A success clears the account's failures from its address, every tier: the owner's typos never add up.
    for _ in range(3):
        for _ in range(4):
            assert await limits.login_attempt("grace@example.com", VICTIM) == 0  # four typos
        assert await limits.login_attempt("grace@example.com", VICTIM) == 0
        await limits.login_succeeded("grace@example.com", VICTIM)  # then the right password
    assert await guesses(1) != [0]


async def test_refused_token_requests_from_one_address_wait_longer_after_each_window(
    sqlite_storage: Storage,
):
    clock = ManualClock()
    overrides = {**PROXY_PEER, "limits": {"protective": {"token_per_client": 2, "token_per_address": 1000}}}
    async with running_gateway(
        storage=sqlite_storage, upstream_url=UNUSED_UPSTREAM, overrides=overrides, clock=clock
    ) as gw:
        app = await register(gw.url)
        replies = [await token_request(gw, app.client_id, STRANGER) for _ in range(3)]
        assert [reply.status for reply in replies] == [400, 400, 429]
        assert int(replies[2].headers["Retry-After"]) == 900
        clock.advance(900)
        replies = [await token_request(gw, app.client_id, STRANGER) for _ in range(3)]
        assert [reply.status for reply in replies] == [400, 400, 429]
        assert int(replies[2].headers["Retry-After"]) == 2700
        assert (await token_request(gw, app.client_id, VICTIM)).status == 400
