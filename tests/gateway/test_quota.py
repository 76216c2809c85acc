"""One quota per account: API keys and OAuth tokens, every client and every replica draw on one counter."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.clock import ManualClock
from gateway.metrics import METRICS
from gateway.storage import Storage
from tests.support.gateway import GatewayHandle, running_gateway
from tests.support.oauth_browser import Browser
from tests.support.oauth_flows import INIT, Reply, bearer, obtain_tokens, post_mcp, register, request
from tests.support.tcp_proxy import tcp_proxy
from tests.support.upstream import UpstreamProcess

REDIS_URL = "redis://127.0.0.1:6379/0"
EMAIL = "quota@example.com"
LIST = INIT  # any JSON-RPC request costs 1; initialize needs no session


def plan_overrides(per_day: int, **extra: Any) -> dict[str, Any]:
    """A plan capped per UTC day only, so no window can roll over in the middle of a test (bar midnight)."""
    plan = {"per_minute": None, "per_day": per_day}
    return {"quota": {"plans": {"tiny": plan}, "default_plan": "tiny", **extra}}


async def oauth_token(gw: GatewayHandle, client_name: str) -> str:
    app = await register(gw.url, client_name=client_name)
    async with Browser(gw.url) as browser:
        return str((await obtain_tokens(app, browser, EMAIL))["access_token"])


def assert_limited(reply: Reply) -> None:
    assert reply.status == 429
    assert int(reply.headers["Retry-After"]) >= 1
    assert reply.headers["RateLimit-Policy"].startswith('"day";q=')
    assert reply.headers["RateLimit"].startswith('"day";r=0')
    body = reply.json()
    assert body["jsonrpc"] == "2.0"
    assert "Quota exceeded" in body["error"]["message"]


async def test_api_keys_and_oauth_tokens_of_one_account_share_one_counter(
    sqlite_storage: Storage, upstream: UpstreamProcess
):
    async with running_gateway(
        storage=sqlite_storage, upstream_url=upstream.mcp_url, overrides=plan_overrides(4)
    ) as gw:
        user = await gw.new_user(EMAIL)
        key = {"X-API-Key": await gw.new_key(user)}
        laptop, server = bearer(await oauth_token(gw, "laptop")), bearer(await oauth_token(gw, "server"))
        assert (await post_mcp(gw.url, {})).status == 401  # unauthenticated: never charged
        replies = [await post_mcp(gw.url, headers, LIST) for headers in (key, laptop, server, key)]
        assert [reply.status for reply in replies] == [200, 200, 200, 200]
        assert replies[0].headers["RateLimit"].startswith('"day";r=3')
        assert replies[3].headers["RateLimit"].startswith('"day";r=0')
        for headers in (key, laptop, server):
            assert_limited(await post_mcp(gw.url, headers, LIST))
        other = await gw.new_user("someone-else@example.com")
        assert (await post_mcp(gw.url, {"X-API-Key": await gw.new_key(other)}, LIST)).status == 200


@pytest.mark.redis
async def test_two_replicas_sharing_redis_admit_exactly_the_limit_under_a_barrier_started_burst(
    sqlite_storage: Storage, upstream: UpstreamProcess, quota_prefix: str
):
    # A generous Redis timeout: this test is about exactness, not about degrading on a slow (loaded) machine.
    overrides = {**plan_overrides(25, key_prefix=quota_prefix, redis_timeout=5.0), "redis": {"url": REDIS_URL}}
    async with running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url, overrides=overrides) as first:
        # Replicas behind one load balancer share one public URL, so tokens are bound to the same resource.
        shared = {**overrides, "public_url": first.url}
        async with running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url, overrides=shared) as second:
            await two_replicas(first, second)


async def two_replicas(first: GatewayHandle, second: GatewayHandle) -> None:
    """An API key on one replica, OAuth tokens of two clients on the other: exactly the limit is admitted."""
    user = await first.new_user(EMAIL)
    key = {"X-API-Key": await first.new_key(user)}
    laptop = bearer(await oauth_token(first, "laptop"))
    token = bearer(await oauth_token(first, "server"))
    start = asyncio.Event()

    async def call(gw: GatewayHandle, headers: dict[str, str]) -> int:
        await start.wait()
        return (await post_mcp(gw.url, headers, LIST)).status

    pairs = [(first, key), (second, laptop), (second, token), (first, key)] * 20
    calls = [asyncio.create_task(call(gw, headers)) for gw, headers in pairs]
    await asyncio.sleep(0)
    start.set()
    statuses = await asyncio.wait_for(asyncio.gather(*calls), 60)
    assert statuses.count(200) == 25
    assert statuses.count(429) == 55
    for gw, headers in ((first, key), (second, token), (second, laptop)):
        assert_limited(await post_mcp(gw.url, headers, LIST))


@pytest.mark.redis
async def test_three_hundred_barrier_started_calls_across_three_replicas_admit_exactly_one_hundred(
    sqlite_storage: Storage, upstream: UpstreamProcess, quota_prefix: str
):
    """Security-cases 92: one Lua admission per call on one counter, whatever replica answers."""
    overrides = {**plan_overrides(100, key_prefix=quota_prefix, redis_timeout=10.0), "redis": {"url": REDIS_URL}}
    async with (
        running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url, overrides=overrides) as one,
        running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url, overrides=overrides) as two,
        running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url, overrides=overrides) as three,
    ):
        key = {"X-API-Key": await one.new_key(await one.new_user(EMAIL))}
        start = asyncio.Event()

        async def call(gw: GatewayHandle) -> int:
            await start.wait()
            return (await post_mcp(gw.url, key, LIST)).status

        calls = [asyncio.create_task(call(gw)) for gw in (one, two, three) * 100]
        await asyncio.sleep(0)
        start.set()
        statuses = await asyncio.wait_for(asyncio.gather(*calls), 120)
        assert statuses.count(200) == 100
        assert statuses.count(429) == 200
        registries = [gw.app[METRICS].registry for gw in (one, two, three)]
        assert sum(r.get_sample_value("gateway_quota_admitted_total") or 0 for r in registries) == 100


async def scraped(gw: GatewayHandle, name: str) -> float:
    """One unlabelled sample from the replica's ``GET /metrics``."""
    reply = await request("GET", gw.url + "/metrics")
    assert reply.status == 200
    samples = {s.name: s.value for f in text_string_to_metric_families(reply.text) for s in f.samples}
    return samples[name]


@pytest.mark.redis
async def test_with_redis_cut_mid_test_calls_are_served_within_the_degraded_share_and_the_shared_count_resumes(
    sqlite_storage: Storage, upstream: UpstreamProcess, quota_prefix: str, clock: ManualClock
):
    async with tcp_proxy("127.0.0.1", 6379) as proxy:
        overrides = {
            **plan_overrides(10, key_prefix=quota_prefix, degraded_share=0.5, redis_timeout=2.0),
            "redis": {"url": f"redis://127.0.0.1:{proxy.port}/0"},
        }
        async with running_gateway(
            storage=sqlite_storage, upstream_url=upstream.mcp_url, overrides=overrides, clock=clock
        ) as gw:
            key = {"X-API-Key": await gw.new_key(await gw.new_user(EMAIL))}
            for _ in range(2):
                assert (await post_mcp(gw.url, key, LIST)).status == 200
            assert await scraped(gw, "gateway_quota_degraded") == 0
            proxy.cut()
            # The local share (5 of 10) was kept warm: 2 already spent, 3 more are served, then 429.
            statuses = [(await post_mcp(gw.url, key, LIST)).status for _ in range(5)]
            assert statuses == [200, 200, 200, 429, 429]
            assert await scraped(gw, "gateway_quota_degraded") == 1
            assert await scraped(gw, "gateway_quota_degraded_admissions_total") == 3
            proxy.restore()
            clock.advance(2)  # past redis_retry_interval: the next call probes Redis
            resumed = await post_mcp(gw.url, key, LIST)
            assert resumed.status == 200
            assert resumed.headers["RateLimit"].startswith('"day";r=7')  # the shared counter went on from 2
            assert await scraped(gw, "gateway_quota_degraded") == 0
