"""What the quota counts (security-cases 93), the concurrent-stream cap (95), and the quota's metrics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.metrics import METRICS
from gateway.storage import Storage
from tests.gateway.test_quota import EMAIL, REDIS_URL, plan_overrides
from tests.support.gateway import UNUSED_UPSTREAM, GatewayHandle, running_gateway
from tests.support.oauth_flows import INIT, Reply, post_mcp, request
from tests.support.scripted_upstream import ScriptedUpstream, json_ok, never_answers, scripted_upstream, slow_stream

WAIT = 10.0
EVENT = b"event: message\ndata: {}\n\n"


async def streams_on_get(request: web.Request) -> web.StreamResponse:
    """GET: an event stream that stays open; anything else: a JSON answer."""
    return await (slow_stream(EVENT) if request.method == "GET" else json_ok)(request)


def remaining(reply: Reply) -> int:
    """The day window's ``r`` from the RateLimit field of an admitted reply."""
    assert reply.status == 200, reply.text
    first = reply.headers["RateLimit"].split(",")[0]
    return int(first.split(";r=")[1].split(";")[0])


def sample(gw: GatewayHandle, name: str) -> float:
    return gw.app[METRICS].registry.get_sample_value(name) or 0.0


@contextlib.asynccontextmanager
async def gateway_before(
    storage: Storage, upstream: ScriptedUpstream, **overrides: Any
) -> AsyncIterator[tuple[GatewayHandle, dict[str, str]]]:
    settings = {**plan_overrides(5), "upstream": {"first_byte_timeout": 0.5}, **overrides}
    async with running_gateway(
        storage=storage, upstream_url=upstream.mcp_url, upstream_sse_url=upstream.sse_url, overrides=settings
    ) as gw:
        user = await gw.new_user(EMAIL)
        yield gw, {"X-API-Key": await gw.new_key(user)}


async def test_refused_and_unauthenticated_requests_and_preflights_never_charge_the_account(sqlite_storage: Storage):
    async with scripted_upstream(json_ok) as upstream, gateway_before(sqlite_storage, upstream) as (gw, key):
        assert remaining(await post_mcp(gw.url, key, INIT)) == 4
        assert (await post_mcp(gw.url, {}, INIT)).status == 401
        assert (await post_mcp(gw.url, {"X-API-Key": "mgw_" + "x" * 38}, INIT)).status == 401
        assert (await post_mcp(gw.url, {**key, "Origin": "https://evil.example"}, INIT)).status == 403
        await request("OPTIONS", gw.mcp_url, headers={"Origin": gw.url, "Access-Control-Request-Method": "POST"})
        assert remaining(await post_mcp(gw.url, key, INIT)) == 3
        for _ in range(3):
            assert (await post_mcp(gw.url, key, INIT)).status == 200
        for _ in range(3):
            assert (await post_mcp(gw.url, key, INIT)).status == 429
        assert sample(gw, "gateway_quota_admitted_total") == 5
        assert sample(gw, "gateway_quota_rejected_total") == 3
        assert len(upstream.requests) == 5


async def test_a_refused_connection_is_refunded_but_a_504_after_the_request_reached_the_upstream_is_not(
    sqlite_storage: Storage,
):
    async with scripted_upstream(json_ok) as upstream, gateway_before(sqlite_storage, upstream) as (gw, key):
        assert remaining(await post_mcp(gw.url, key, INIT)) == 4
        upstream.behaviour = never_answers
        timed_out = await asyncio.wait_for(post_mcp(gw.url, key, INIT), WAIT)
        assert timed_out.status == 504
        assert len(upstream.requests) == 2  # it arrived: the tool may have run
        upstream.behaviour = json_ok
        assert remaining(await post_mcp(gw.url, key, INIT)) == 2  # the 504 stays charged
    async with running_gateway(storage=sqlite_storage, upstream_url=UNUSED_UPSTREAM, overrides=plan_overrides(5)) as gw:
        key = {"X-API-Key": await gw.new_key(await gw.new_user("other@example.com"))}
        replies = [await post_mcp(gw.url, key, INIT) for _ in range(7)]
        assert [reply.status for reply in replies] == [502] * 7  # refunded every time: never a 429
        assert sample(gw, "gateway_quota_admitted_total") == 7


@contextlib.asynccontextmanager
async def open_stream(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> AsyncIterator[int]:
    """A standalone GET stream held open; yields its status (after the first event when 200)."""
    async with http.get(url, headers={**headers, "Accept": "text/event-stream"}) as response:
        if response.status == 200:
            assert await asyncio.wait_for(response.content.readuntil(b"\n\n"), WAIT)
        yield response.status


async def reopens(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> int:
    """The status of a new stream once the gateway has seen the closed ones go (it notices a client that
    left asynchronously): 429 while they still hold their slots, then 200; bounded by ``WAIT``."""
    async with asyncio.timeout(WAIT):
        while True:
            async with open_stream(http, url, headers) as status:
                if status != 429:
                    return status
            await asyncio.sleep(0.02)


async def test_an_account_past_its_concurrent_stream_cap_gets_429_and_a_closed_stream_frees_its_slot(
    sqlite_storage: Storage,
):
    quota = {**plan_overrides(100)["quota"], "max_concurrent_streams": 2}
    async with (
        scripted_upstream(streams_on_get) as upstream,
        gateway_before(sqlite_storage, upstream, quota=quota) as (gw, key),
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as http,
    ):
        async with open_stream(http, gw.mcp_url, key) as first, open_stream(http, gw.sse_url, key) as second:
            assert (first, second) == (200, 200)
            async with http.get(gw.mcp_url, headers={**key, "Accept": "text/event-stream"}) as third:
                assert third.status == 429
                assert int(third.headers["Retry-After"]) >= 1
                body = await third.json()
                assert body["jsonrpc"] == "2.0"
                assert "Too many open streams" in body["error"]["message"]
            # POSTs are not streams: still admitted while two streams are open.
            assert (await post_mcp(gw.url, key, INIT)).status == 200
        assert await reopens(http, gw.mcp_url, key) == 200
    # Each stream was charged once at open (two streams, the POST, the reopened one); the refusals were not.
    assert sample(gw, "gateway_quota_admitted_total") == 4


@pytest.mark.redis
async def test_replicas_share_the_stream_cap_through_redis_leases(sqlite_storage: Storage, quota_prefix: str):
    quota = {**plan_overrides(100)["quota"], "max_concurrent_streams": 2, "key_prefix": quota_prefix}
    overrides: dict[str, Any] = {"quota": quota, "redis": {"url": REDIS_URL}}
    async with (
        scripted_upstream(streams_on_get) as upstream,
        gateway_before(sqlite_storage, upstream, **overrides) as (one, key),
        running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url, overrides=overrides) as two,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as http,
    ):
        async with open_stream(http, one.mcp_url, key) as first, open_stream(http, two.mcp_url, key) as second:
            assert (first, second) == (200, 200)
            async with open_stream(http, one.mcp_url, key) as third, open_stream(http, two.mcp_url, key) as fourth:
                assert (third, fourth) == (429, 429)
        assert await reopens(http, two.mcp_url, key) == 200
