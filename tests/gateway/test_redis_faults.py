"""Redis unreachable: credentials are validated from storage, revocations still apply, readiness says degraded."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aiohttp
import pytest
from redis.asyncio import Redis

from gateway.clock import ManualClock
from gateway.revocation import Revocation
from gateway.revocation_redis import RedisRevocationBus
from gateway.storage import Storage
from tests.support.gateway import GatewayHandle, running_gateway
from tests.support.oauth_browser import Browser
from tests.support.oauth_flows import EMAIL, bearer, obtain_tokens, post_mcp, register
from tests.support.replicas import REDIS_URL
from tests.support.tcp_proxy import TcpProxy, tcp_proxy
from tests.support.upstream import UpstreamProcess


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_with_redis_unreachable_tokens_work_revocations_apply_at_once_and_readiness_reports_degraded(
    sqlite_storage: Storage, upstream: UpstreamProcess
):
    dead_redis = f"redis://127.0.0.1:{closed_port()}/0"
    async with running_gateway(
        storage=sqlite_storage, upstream_url=upstream.mcp_url, overrides={"redis": {"url": dead_redis}}
    ) as gw:
        await gw.new_user(EMAIL)
        app = await register(gw.url)
        async with Browser(gw.url) as browser:
            tokens = await obtain_tokens(app, browser, EMAIL)
        headers = bearer(tokens["access_token"])
        assert (await post_mcp(gw.url, headers)).status == 200
        assert (await post_mcp(gw.url, headers)).status == 200  # a cache hit
        assert (await app.revoke(tokens["access_token"])).status == 200
        refused = await post_mcp(gw.url, headers)
        assert refused.status == 401  # the announcement reached this process although Redis did not take it
        async with aiohttp.ClientSession() as http, http.get(f"{gw.url}/readyz") as ready:
            assert ready.status == 200
            assert await ready.json() == {
                "status": "degraded",
                "checks": {"storage": "ok", "upstream": "ok", "redis": "degraded"},
            }


@contextlib.asynccontextmanager
async def keyed_gateway_behind_a_cuttable_redis(
    storage: Storage, upstream: UpstreamProcess, clock: ManualClock
) -> AsyncIterator[tuple[GatewayHandle, TcpProxy, dict[str, str], str]]:
    """A gateway subscribed to Redis through a proxy the test controls, with an API key that has just worked:
    (gateway, proxy, the key's headers, the key's id)."""
    redis = urlsplit(REDIS_URL)
    async with tcp_proxy(redis.hostname or "127.0.0.1", redis.port or 6379) as network:
        url = REDIS_URL.replace(redis.netloc, f"127.0.0.1:{network.port}")
        overrides = {
            "redis": {"url": url, "revocation_channel": f"gwt{secrets.token_hex(6)}:revocations"},
            "quota": {"default_plan": "unlimited"},
        }
        async with running_gateway(
            storage=storage, upstream_url=upstream.mcp_url, clock=clock, overrides=overrides
        ) as gw:
            user = await gw.new_user()
            row, minted = await gw.accounts.create_key(user, name="k", expires_in=None)
            headers = {"X-API-Key": minted.key}
            await until_subscribed(gw.url)
            assert (await post_mcp(gw.url, headers)).status == 200
            yield gw, network, headers, row.id


async def until_refused(url: str, headers: dict[str, str]) -> None:
    """Requests in a bounded loop until one is refused (the test's clock never expires the cache)."""
    async with asyncio.timeout(10):
        while (await post_mcp(url, headers)).status != 401:
            await asyncio.sleep(0.02)


async def until_subscribed(url: str) -> None:
    async with aiohttp.ClientSession() as http, asyncio.timeout(10):
        while True:
            async with http.get(f"{url}/readyz") as ready:
                if (await ready.json())["status"] == "ready":
                    return
            await asyncio.sleep(0.02)


@pytest.mark.redis
async def test_an_announcement_from_another_replica_drops_the_cached_key_and_malformed_ones_are_ignored(
    sqlite_storage: Storage, upstream: UpstreamProcess, clock: ManualClock
):
    channel = f"gwt{secrets.token_hex(6)}:revocations"
    overrides = {"redis": {"url": REDIS_URL, "revocation_channel": channel}, "quota": {"default_plan": "unlimited"}}
    async with running_gateway(
        storage=sqlite_storage, upstream_url=upstream.mcp_url, clock=clock, overrides=overrides
    ) as gw:
        user = await gw.new_user()
        row, minted = await gw.accounts.create_key(user, name="k", expires_in=None)
        headers = {"X-API-Key": minted.key}
        assert (await post_mcp(gw.url, headers)).status == 200
        await sqlite_storage.revoke_api_key(row.id, now=clock.now())
        assert (await post_mcp(gw.url, headers)).status == 200  # cached, and this clock never moves
        other_replica = RedisRevocationBus(REDIS_URL, channel)
        publisher = Redis.from_url(REDIS_URL)
        try:
            await until_subscribed(gw.url)
            for garbage in (b"not json", b"[1, 2]", b'{"family_ids": "x"}', b"x" * 100_000):
                await publisher.publish(channel, garbage)
            await other_replica.announce(Revocation(user.id, clock.now(), api_key_ids=(row.id,), source="cli"))
            await until_refused(gw.url, headers)
        finally:
            await other_replica.close()
            await publisher.aclose()


@pytest.mark.redis
async def test_after_the_subscription_comes_back_the_validation_cache_is_flushed(
    sqlite_storage: Storage, upstream: UpstreamProcess, clock: ManualClock
):
    async with keyed_gateway_behind_a_cuttable_redis(sqlite_storage, upstream, clock) as (gw, cut_off, headers, key_id):
        cut_off.cut()
        await sqlite_storage.revoke_api_key(key_id, now=clock.now())  # its announcement would be lost
        assert (await post_mcp(gw.url, headers)).status == 200  # still cached: this clock never moves
        cut_off.restore()
        await until_refused(gw.url, headers)


@pytest.mark.redis
async def test_a_silently_dead_subscription_is_noticed_and_the_cache_flushed_once_redis_answers_again(
    sqlite_storage: Storage, upstream: UpstreamProcess, clock: ManualClock, caplog: pytest.LogCaptureFixture
):
    async with keyed_gateway_behind_a_cuttable_redis(sqlite_storage, upstream, clock) as (gw, network, headers, key_id):
        network.blackhole()  # no reset, no bytes: only the subscription's own PINGs can tell
        await sqlite_storage.revoke_api_key(key_id, now=clock.now())
        async with asyncio.timeout(15):
            while "revocation subscription lost" not in caplog.text:
                await asyncio.sleep(0.1)
        network.resume()
        await until_refused(gw.url, headers)
