"""Security-cases 94: the open OAuth endpoints have per-address and per-client budgets (429 + Retry-After),
shared by the replicas through Redis, strict per replica while Redis is unreachable, never unlimited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import redis.asyncio as redis_asyncio
from aiohttp import web

from gateway.clock import ManualClock
from gateway.metrics import METRICS
from gateway.storage import Storage
from tests.support.gateway import TEST_PASSWORD, UNUSED_UPSTREAM, GatewayHandle, running_gateway
from tests.support.https_server import make_local_ca, serve_https
from tests.support.oauth_browser import Browser
from tests.support.oauth_flows import (
    EMAIL,
    FORM,
    REDIRECT_URI,
    OAuthApp,
    Reply,
    bearer,
    login_post,
    new_pkce,
    obtain_tokens,
    post_mcp,
    query_url,
    register,
    request,
    sign_in_page,
)
from tests.support.tcp_proxy import tcp_proxy
from tests.support.upstream import UpstreamProcess

REDIS_URL = "redis://127.0.0.1:6379/0"
PROXY_PEER = {"security": {"trusted_proxies": ["127.0.0.1"]}}
"""The test client is the trusted load balancer: ``X-Forwarded-For`` names the client address."""


def budgets(**protective: int) -> dict[str, Any]:
    return {**PROXY_PEER, "limits": {"protective": protective}}


def throttled(gw: GatewayHandle, endpoint: str) -> float:
    value = gw.app[METRICS].registry.get_sample_value("gateway_throttled_total", {"endpoint": endpoint})
    return value or 0.0


async def token_request(gw: GatewayHandle, client_id: str, address: str) -> Reply:
    fields = {"grant_type": "authorization_code", "code": "gwac_not-a-code", "client_id": client_id}
    fields |= {"redirect_uri": REDIRECT_URI, "code_verifier": "v" * 43}
    headers = {"Content-Type": FORM, "X-Forwarded-For": address}
    return await request("POST", gw.url + "/token", data=urlencode(fields), headers=headers)


async def revoke_request(gw: GatewayHandle, client_id: str, address: str) -> Reply:
    fields = {"token": "gwat_unknown", "client_id": client_id}
    headers = {"Content-Type": FORM, "X-Forwarded-For": address}
    return await request("POST", gw.url + "/revoke", data=urlencode(fields), headers=headers)


async def authorize_request(gw: GatewayHandle, client_id: str, address: str) -> Reply:
    url = query_url(gw.url + "/authorize", {"client_id": client_id, "redirect_uri": REDIRECT_URI})
    return await request("GET", url, headers={"X-Forwarded-For": address})


def assert_oauth_429(reply: Reply) -> None:
    assert reply.status == 429
    assert 1 <= int(reply.headers["Retry-After"]) <= 900
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.headers["Cache-Control"] == "no-store"
    assert reply.json() == {
        "error": "temporarily_unavailable",
        "error_description": "Too many requests; try again later",
    }


@pytest.fixture
async def limited(sqlite_storage: Storage, clock: ManualClock) -> AsyncIterator[GatewayHandle]:
    overrides = budgets(token_per_address=3, token_per_client=5, revoke_per_address=2, authorize_per_address=2)
    async with running_gateway(
        storage=sqlite_storage, upstream_url=UNUSED_UPSTREAM, overrides=overrides, clock=clock
    ) as gw:
        yield gw


async def test_a_burst_at_the_token_endpoint_is_refused_per_address_with_an_oauth_429_and_the_window_ends(
    limited: GatewayHandle, clock: ManualClock
):
    app = await register(limited.url)
    for _ in range(3):
        assert (await token_request(limited, app.client_id, "198.51.100.7")).json()["error"] == "invalid_grant"
    refused = await token_request(limited, app.client_id, "198.51.100.7")
    assert_oauth_429(refused)
    assert refused.headers["Access-Control-Allow-Origin"] == "*"
    assert (await token_request(limited, app.client_id, "198.51.100.8")).status == 400  # another address
    assert throttled(limited, "token") == 1
    clock.advance(901)
    assert (await token_request(limited, app.client_id, "198.51.100.7")).status == 400


async def test_refused_token_requests_count_per_client_and_address_so_no_address_spends_anothers(
    sqlite_storage: Storage, clock: ManualClock
):
    overrides = budgets(token_per_address=10, token_per_client=2)
    async with running_gateway(
        storage=sqlite_storage, upstream_url=UNUSED_UPSTREAM, overrides=overrides, clock=clock
    ) as gw:
        app, other = await register(gw.url), await register(gw.url, client_name="Other")
        statuses = [(await token_request(gw, app.client_id, f"203.0.113.{i}")).status for i in range(6)]
        assert statuses == [400] * 6  # spread over addresses: a public client id is no shared budget
        statuses = [(await token_request(gw, app.client_id, "203.0.113.9")).status for _ in range(3)]
        assert statuses == [400, 400, 429]
        assert (await token_request(gw, other.client_id, "203.0.113.9")).status == 400
        assert (await token_request(gw, app.client_id, "203.0.113.10")).status == 400


async def test_successful_refreshes_never_spend_the_per_client_budget_that_failures_do(
    sqlite_storage: Storage, clock: ManualClock
):
    """A CIMD client id is shared by all its users: their refreshes must not lock the app out."""
    overrides = budgets(token_per_client=3)
    async with running_gateway(
        storage=sqlite_storage, upstream_url=UNUSED_UPSTREAM, overrides=overrides, clock=clock
    ) as gw:
        await gw.new_user(EMAIL)
        app = await register(gw.url)
        async with Browser(gw.url) as browser:
            refresh_token = (await obtain_tokens(app, browser, EMAIL))["refresh_token"]
        for _ in range(5):
            reply = await app.refresh(refresh_token)
            assert reply.status == 200, reply.text
            refresh_token = reply.json()["refresh_token"]
        statuses = [(await token_request(gw, app.client_id, "198.51.100.1")).status for _ in range(4)]
        assert statuses == [400, 400, 400, 429]  # three refused requests spend it; the fourth is refused
        assert (await app.refresh(refresh_token)).status == 200  # a valid credential is never refused by it


async def test_revocation_has_its_own_budget_and_answers_an_oauth_429(limited: GatewayHandle):
    app = await register(limited.url)
    assert [(await revoke_request(limited, app.client_id, "192.0.2.1")).status for _ in range(2)] == [200, 200]
    assert_oauth_429(await revoke_request(limited, app.client_id, "192.0.2.1"))
    assert (await token_request(limited, app.client_id, "192.0.2.1")).status == 400  # token budget untouched
    assert throttled(limited, "revoke") == 1


async def test_a_burst_at_authorize_gets_an_html_page_with_retry_after(limited: GatewayHandle):
    app = await register(limited.url)
    for _ in range(2):
        assert (await authorize_request(limited, app.client_id, "192.0.2.9")).status != 429
    refused = await authorize_request(limited, app.client_id, "192.0.2.9")
    assert refused.status == 429
    assert refused.headers["Content-Type"].startswith("text/html")
    assert int(refused.headers["Retry-After"]) >= 1
    assert "Too many requests" in refused.text
    assert (await authorize_request(limited, app.client_id, "192.0.2.10")).status != 429
    assert throttled(limited, "authorize") == 1


async def test_metadata_document_fetches_are_budgeted_per_address_and_per_document(
    sqlite_storage: Storage, tmp_path: Path
):
    ca = make_local_ca(tmp_path / "tls")
    fetched: list[str] = []

    async def missing(request: web.Request) -> web.Response:
        fetched.append(request.path)
        return web.Response(status=404)  # a failed fetch is not cached: every authorize fetches again

    site = web.Application()
    site.router.add_get("/{name}.json", missing)
    async with serve_https(site, ca) as https:
        overrides = {
            **budgets(cimd_fetches_per_address=3, cimd_fetches_per_document=2),
            "oauth": {"cimd": {"allow_private_addresses": True, "ca_file": str(ca.ca_path)}},
        }
        async with running_gateway(storage=sqlite_storage, upstream_url=UNUSED_UPSTREAM, overrides=overrides) as gw:
            one = https.url("/one.json", host="localhost")
            statuses = [(await authorize_request(gw, one, f"192.0.2.{i}")).status for i in range(3)]
            assert statuses == [400, 400, 429]  # the third fetch of one document, whoever asks
            assert len(fetched) == 2
            documents = [https.url(f"/doc{i}.json", host="localhost") for i in range(3)]
            statuses = [(await authorize_request(gw, url, "198.51.100.1")).status for url in documents]
            assert statuses == [400, 400, 400]
            assert (
                await authorize_request(gw, https.url("/four.json", host="localhost"), "198.51.100.1")
            ).status == 429
            assert len(fetched) == 5
            assert throttled(gw, "cimd") == 2


def shared(prefix: str, redis_url: str = REDIS_URL, **protective: int) -> dict[str, Any]:
    return {**budgets(**protective), "redis": {"url": redis_url}, "quota": {"key_prefix": prefix, "redis_timeout": 5.0}}


@pytest.mark.redis
async def test_two_replicas_share_one_budget_through_redis_and_every_key_expires(
    sqlite_storage: Storage, quota_prefix: str
):
    overrides = shared(quota_prefix, token_per_address=3, token_per_client=100)
    async with running_gateway(storage=sqlite_storage, upstream_url=UNUSED_UPSTREAM, overrides=overrides) as one:
        async with running_gateway(storage=sqlite_storage, upstream_url=UNUSED_UPSTREAM, overrides=overrides) as two:
            app = await register(one.url)
            replies = [await token_request(gw, app.client_id, "198.51.100.20") for gw in (one, two, one, two)]
            assert [reply.status for reply in replies] == [400, 400, 400, 429]
            # Hostile client ids (security-cases 92) become hashed, bounded keys, each with a TTL.
            hostile = ["*", "a b", "a\nDEL x", "{}", "}{", "https://c.example/" + "x" * 2048]
            for client_id in hostile:
                assert (await token_request(two, client_id, "198.51.100.21")).status in (400, 401, 429)
    client = redis_asyncio.Redis.from_url(REDIS_URL)
    try:
        keys = [key.decode() async for key in client.scan_iter(match=f"{quota_prefix}:*")]
        assert len(keys) >= 2 + len(hostile)
        for key in keys:
            assert len(key) < 100
            if key.startswith(f"{quota_prefix}:trail:"):  # the flight recorder's rings (hashed subjects)
                assert 0 < await client.pttl(key) <= 86_400_000
                continue
            assert key.startswith((f"{quota_prefix}:t:token:", f"{quota_prefix}:t:register:"))
            assert all(part not in key for part in ("*", " ", "\n", "{}", "}{", "example"))
            # Registration counts per hour; failure budgets have longer tiers (``<dimension>2``: 1 h, ``3``: 4 h).
            tier = key.split(":")[-2][-1]
            longest = 14_400_000 if tier == "3" else 3_600_000 if tier == "2" or ":t:register:" in key else 900_000
            assert 0 < await client.pttl(key) <= longest
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_while_redis_is_cut_each_replica_applies_a_strict_share_and_the_shared_budget_resumes(
    sqlite_storage: Storage, quota_prefix: str, clock: ManualClock
):
    async with tcp_proxy("127.0.0.1", 6379) as proxy:
        overrides = shared(f"{quota_prefix}", f"redis://127.0.0.1:{proxy.port}/0", revoke_per_address=4)
        overrides["quota"] |= {"degraded_share": 0.5, "redis_timeout": 2.0}
        async with running_gateway(
            storage=sqlite_storage, upstream_url=UNUSED_UPSTREAM, overrides=overrides, clock=clock
        ) as gw:
            app = await register(gw.url)
            assert (await revoke_request(gw, app.client_id, "192.0.2.50")).status == 200  # shared count: 1
            proxy.cut()
            # Strict: half the budget, counted locally (the shared request above was recorded locally too).
            statuses = [(await revoke_request(gw, app.client_id, "192.0.2.50")).status for _ in range(3)]
            assert statuses == [200, 429, 429]
            proxy.restore()
            clock.advance(2)  # past the retry interval: the next request probes Redis again
            statuses = [(await revoke_request(gw, app.client_id, "192.0.2.50")).status for _ in range(4)]
            assert statuses == [200, 200, 200, 429]  # the shared budget (4) counts on from 1


@pytest.mark.redis
async def test_sign_in_failures_on_two_replicas_lock_the_account_on_both(sqlite_storage: Storage, quota_prefix: str):
    """Case 38 across replicas: an attacker cannot double the guesses by spreading them over replicas."""
    overrides = shared(quota_prefix, login_failures_per_account=4)
    async with (
        running_gateway(storage=sqlite_storage, upstream_url=UNUSED_UPSTREAM, overrides=overrides) as one,
        running_gateway(storage=sqlite_storage, upstream_url=UNUSED_UPSTREAM, overrides=overrides) as two,
    ):
        await one.new_user(EMAIL)
        registered = await register(one.url)
        statuses: list[int] = []
        for gw in (one, two):
            app = OAuthApp(gw.url, registered.client_id, registered.redirect_uri)
            async with Browser(gw.url) as browser:
                page = await sign_in_page(browser, app.authorization_url(new_pkce()))
                for _ in range(2):
                    statuses.append((await login_post(browser, page, EMAIL, "wrong password!")).status)
                if gw is two:
                    locked = await login_post(browser, page, EMAIL, TEST_PASSWORD)
        assert statuses == [401] * 4
        assert locked.status == 429  # four failures in all; either replica alone saw only two
        assert int(locked.headers["Retry-After"]) >= 1


async def test_look_alike_spellings_of_one_email_share_its_sign_in_budget(sqlite_storage: Storage, clock: ManualClock):
    """Case 38: case and fullwidth letters (NFKC) reach the same account, so they count against the same budget."""
    overrides = budgets(login_failures_per_account=3)
    async with running_gateway(
        storage=sqlite_storage, upstream_url=UNUSED_UPSTREAM, overrides=overrides, clock=clock
    ) as gw:
        await gw.new_user("grace@example.com")
        registered = await register(gw.url)
        async with Browser(gw.url) as browser:
            page = await sign_in_page(browser, registered.authorization_url(new_pkce()))
            spellings = ["GRACE@example.com", "\uff47race@example.com", "gr\uff41ce@EXAMPLE.com"]
            statuses = [(await login_post(browser, page, email, "wrong password!")).status for email in spellings]
            assert statuses == [401, 401, 401]
            locked = await login_post(browser, page, "grace@example.com", TEST_PASSWORD)
        assert locked.status == 429
        assert throttled(gw, "login") == 1


async def test_parallel_password_guesses_cannot_all_pass_the_budget_check(sqlite_storage: Storage, clock: ManualClock):
    """Case 38 under concurrency: each attempt is charged before its (slow) password check."""
    overrides = budgets(login_failures_per_account=3)
    async with running_gateway(
        storage=sqlite_storage, upstream_url=UNUSED_UPSTREAM, overrides=overrides, clock=clock
    ) as gw:
        await gw.new_user("hopper@example.com")
        registered = await register(gw.url)
        async with Browser(gw.url) as browser:
            page = await sign_in_page(browser, registered.authorization_url(new_pkce()))
            start = asyncio.Event()

            async def guess(i: int) -> int:
                await start.wait()
                return (await login_post(browser, page, "hopper@example.com", f"guess number {i}")).status

            guesses = [asyncio.create_task(guess(i)) for i in range(20)]
            await asyncio.sleep(0)
            start.set()
            statuses = await asyncio.wait_for(asyncio.gather(*guesses), 60)
        assert statuses.count(401) == 3
        assert statuses.count(429) == 17


async def test_an_address_presenting_refused_credentials_to_mcp_is_throttled_before_any_lookup_and_no_account_pays(
    sqlite_storage: Storage, upstream: UpstreamProcess, clock: ManualClock
):
    overrides = budgets(mcp_auth_failures_per_address=3)
    async with running_gateway(
        storage=sqlite_storage, upstream_url=upstream.mcp_url, overrides=overrides, clock=clock
    ) as gw:
        key = await gw.new_key(await gw.new_user("mcp-guard@example.com"))
        guesser = {"X-Forwarded-For": "198.51.100.66"}
        wrong = [{**guesser, "X-API-Key": "mgw_" + "A" * 38}, {**guesser, **bearer("gwat_guess")}, guesser]
        assert [(await post_mcp(gw.url, headers)).status for headers in wrong] == [401, 401, 401]
        refused = await post_mcp(gw.url, {**guesser, "X-API-Key": "mgw_" + "B" * 38})
        assert refused.status == 429
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["error"]["message"].startswith("Too many refused credentials from this address")
        # Refused before the credential is looked at, whatever it is; another address is unaffected.
        assert (await post_mcp(gw.url, {**guesser, "X-API-Key": key})).status == 429
        neighbour = await post_mcp(gw.url, {"X-Forwarded-For": "198.51.100.67", "X-API-Key": key})
        assert neighbour.status == 200
        assert neighbour.headers["RateLimit"].startswith('"minute";r=59')  # the refusals charged no account
        assert throttled(gw, "mcp") == 2
        clock.advance(901)
        assert (await post_mcp(gw.url, {**guesser, "X-API-Key": key})).status == 200
