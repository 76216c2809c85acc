"""Two gateway replicas sharing a real Redis Cluster (``redis.cluster: true``; three primaries started by the
tests, ``tests/support/redis_cluster.py``): the quota stays exact, the protective limits are shared, a
revocation announced on one replica reaches the other, and killing one primary degrades only the accounts whose
keys it held while the others keep exact shared counting."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.config import ConfigError, parse_config
from gateway.metrics import METRICS
from gateway.quota.limiter import account_key_part
from gateway.revocation import REVOCATIONS, Revocation
from gateway.revocation_redis import RedisRevocationBus
from gateway.storage import Storage
from gateway.storage.base import User
from tests.support.gateway import TEST_PASSWORD, GatewayHandle, running_gateway
from tests.support.oauth_browser import Browser
from tests.support.oauth_flows import (
    EMAIL,
    FORM,
    INIT,
    OAuthApp,
    login_post,
    new_pkce,
    obtain_tokens,
    post_mcp,
    register,
    request,
    sign_in_page,
)
from tests.support.redis_cluster import RedisClusterNodes
from tests.support.upstream import UpstreamProcess

pytestmark = pytest.mark.redis

GIVE_UP = 10.0
"""Bound of every wait for something asynchronous (a subscription, an announcement)."""


def cluster_config(nodes: RedisClusterNodes, per_day: int = 10, **protective: int) -> dict[str, Any]:
    tag = secrets.token_hex(4)
    return {
        "redis": {"url": nodes.url, "cluster": True, "revocation_channel": f"gwc{tag}:revocations"},
        "quota": {
            "key_prefix": f"gwc{tag}:q",
            "redis_timeout": 5.0,  # exactness tests, not timing ones, on a loaded machine
            "plans": {"tiny": {"per_minute": None, "per_day": per_day}},
            "default_plan": "tiny",
        },
        "security": {"trusted_proxies": ["127.0.0.1"]},
        "limits": {"protective": protective},
    }


@contextlib.asynccontextmanager
async def two_replicas(
    storage: Storage,
    upstream: UpstreamProcess,
    overrides: dict[str, Any],
    heard: list[Revocation] | None = None,
    *,
    one_public_url: bool = True,
) -> AsyncIterator[tuple[GatewayHandle, GatewayHandle]]:
    """Two replicas on one storage and one cluster, behind one (imaginary) load balancer: one public URL
    (``one_public_url``; else each its own, so a browser can sign in on either)."""

    def listen(app: Any) -> None:
        if heard is not None:
            app[REVOCATIONS].listen(heard.append)

    async with running_gateway(storage=storage, upstream_url=upstream.mcp_url, overrides=overrides) as one:
        shared = {**overrides, "public_url": one.url} if one_public_url else overrides
        async with running_gateway(
            storage=storage, upstream_url=upstream.mcp_url, overrides=shared, prepare=listen
        ) as two:
            yield one, two


async def burst(calls: list[tuple[GatewayHandle, dict[str, str]]]) -> list[int]:
    start = asyncio.Event()

    async def call(gw: GatewayHandle, headers: dict[str, str]) -> int:
        await start.wait()
        return (await post_mcp(gw.url, headers, INIT)).status

    tasks = [asyncio.create_task(call(gw, headers)) for gw, headers in calls]
    await asyncio.sleep(0)
    start.set()
    return await asyncio.wait_for(asyncio.gather(*tasks), 60)


@pytest.mark.parametrize(
    ("redis", "problem"),
    [
        ({"cluster": True}, "redis.cluster: needs redis.url (any one node of the cluster)"),
        (
            {"cluster": True, "url": "unix:///run/redis.sock"},
            "redis.cluster: redis.url must be redis:// or rediss:// (a node's host and port)",
        ),
        (
            {"cluster": True, "url": "redis://10.0.0.5:6379/3"},
            "redis.cluster: a Redis Cluster has database 0 only (redis.url ending in /0 or no path)",
        ),
        ({"cluster": "yes", "url": "redis://10.0.0.5:6379"}, "redis.cluster: expected true or false"),
    ],
)
def test_a_cluster_setting_without_a_node_url_on_database_0_is_refused_with_its_path(
    redis: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"redis": redis})
    assert problem in caught.value.problems


def test_a_cluster_url_naming_one_node_is_accepted() -> None:
    config = parse_config({"redis": {"url": "rediss://:${PW}@10.0.0.5:6379/0", "cluster": True}}, env={"PW": "x" * 24})
    assert config.redis.cluster
    assert config.redis.url == "rediss://:" + "x" * 24 + "@10.0.0.5:6379/0"


async def test_two_replicas_on_a_redis_cluster_admit_exactly_the_quota_of_an_account(
    sqlite_storage: Storage, upstream: UpstreamProcess, redis_cluster: RedisClusterNodes
) -> None:
    async with two_replicas(sqlite_storage, upstream, cluster_config(redis_cluster, per_day=10)) as (one, two):
        key = {"X-API-Key": await one.new_key(await one.new_user())}
        statuses = await burst([(one, key), (two, key)] * 15)
        assert statuses.count(200) == 10
        assert statuses.count(429) == 20
        for gw in (one, two):
            assert (await post_mcp(gw.url, key, INIT)).status == 429


async def revoke_request(gw: GatewayHandle, client_id: str, address: str) -> int:
    fields = f"token=gwat_unknown&client_id={client_id}"
    reply = await request(
        "POST", gw.url + "/revoke", data=fields, headers={"Content-Type": FORM, "X-Forwarded-For": address}
    )
    return reply.status


async def test_protective_budgets_on_a_redis_cluster_are_shared_by_two_replicas(
    sqlite_storage: Storage, upstream: UpstreamProcess, redis_cluster: RedisClusterNodes
) -> None:
    overrides = cluster_config(redis_cluster, revoke_per_address=3, login_failures_per_account=4)
    async with two_replicas(sqlite_storage, upstream, overrides, one_public_url=False) as (one, two):
        app = await register(one.url)
        statuses = [await revoke_request(gw, app.client_id, "198.51.100.30") for gw in (one, two, one, two)]
        assert statuses == [200, 200, 200, 429]  # one budget of 3 across both replicas, never a per-replica one
        assert one.app[METRICS].registry.get_sample_value("gateway_quota_degraded") in (None, 0.0)
        await one.new_user(EMAIL)
        failures: list[int] = []
        for gw in (one, two):
            oauth = OAuthApp(gw.url, app.client_id, app.redirect_uri)
            async with Browser(gw.url) as browser:
                page = await sign_in_page(browser, oauth.authorization_url(new_pkce()))
                failures += [(await login_post(browser, page, EMAIL, "wrong password!")).status for _ in range(2)]
                if gw is two:
                    locked = await login_post(browser, page, EMAIL, TEST_PASSWORD)
        assert failures == [401] * 4
        assert locked.status == 429  # four failures in all; either replica alone saw only two


async def until_subscribed(*replicas: GatewayHandle) -> None:
    deadline = time.monotonic() + GIVE_UP
    for gw in replicas:
        bus = gw.app[REVOCATIONS]
        assert isinstance(bus, RedisRevocationBus)
        while not bus.subscribed:
            assert time.monotonic() < deadline, "the revocation subscription did not start"
            await asyncio.sleep(0.01)  # pace the loop; the deadline bounds it


async def test_a_revocation_announced_on_one_replica_reaches_the_other_through_the_cluster(
    sqlite_storage: Storage, upstream: UpstreamProcess, redis_cluster: RedisClusterNodes
) -> None:
    heard: list[Revocation] = []
    async with two_replicas(sqlite_storage, upstream, cluster_config(redis_cluster, per_day=100), heard) as (one, two):
        await until_subscribed(one, two)
        user = await one.new_user(EMAIL)
        app = await register(one.url)
        async with Browser(one.url) as browser:
            tokens = await obtain_tokens(app, browser, EMAIL)
        assert (await app.revoke(tokens["refresh_token"])).status == 200  # on replica one only
        deadline = time.monotonic() + GIVE_UP
        while not heard:
            assert time.monotonic() < deadline, "replica two never heard the announcement"
            await asyncio.sleep(0.01)  # pace the loop; the deadline bounds it
        assert [(r.account_id, r.source) for r in heard] == [(user.id, "rfc7009")]
        assert (await post_mcp(two.url, {"Authorization": f"Bearer {tokens['access_token']}"}, INIT)).status == 401


async def until(what: str, condition: Any) -> None:
    deadline = time.monotonic() + GIVE_UP
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)  # pace the loop; the deadline bounds it


async def test_revocations_still_reach_the_other_replica_after_the_primary_they_subscribed_on_dies(
    sqlite_storage: Storage, upstream: UpstreamProcess, redis_cluster: RedisClusterNodes
) -> None:
    heard: list[Revocation] = []
    gaps: list[None] = []
    async with two_replicas(sqlite_storage, upstream, cluster_config(redis_cluster, per_day=100), heard) as (one, two):
        await until_subscribed(one, two)
        bus = two.app[REVOCATIONS]
        assert isinstance(bus, RedisRevocationBus)
        bus.listen_gaps(lambda: gaps.append(None))
        await one.new_user(EMAIL)
        app = await register(one.url)
        async with Browser(one.url) as browser:
            tokens = await obtain_tokens(app, browser, EMAIL)
        # Both replicas subscribe first on the primary that sorts first by address.
        first = min(redis_cluster.ports, key=lambda port: f"127.0.0.1:{port}")
        redis_cluster.kill(first)
        try:
            await until("replica two never re-subscribed on another primary", lambda: gaps and bus.subscribed)
            await until_subscribed(one)
            assert (await app.revoke(tokens["refresh_token"])).status == 200
            await until("replica two never heard the announcement", lambda: heard)
            assert [r.source for r in heard] == ["rfc7009"]
        finally:
            redis_cluster.restart(first)


async def users_by_node(gw: GatewayHandle, nodes: RedisClusterNodes, prefix: str, wanted: set[int]) -> dict[int, User]:
    found: dict[int, User] = {}
    while not wanted <= set(found):
        user = await gw.new_user()
        found.setdefault(nodes.node_of(f"{prefix}:{{{account_key_part(user.id)}}}:d"), user)
    return found


def degraded_admissions(gw: GatewayHandle) -> float:
    return gw.app[METRICS].registry.get_sample_value("gateway_quota_degraded_admissions_total") or 0.0


async def test_killing_one_primary_degrades_only_the_accounts_whose_keys_it_held(
    sqlite_storage: Storage, upstream: UpstreamProcess, redis_cluster: RedisClusterNodes
) -> None:
    overrides = cluster_config(redis_cluster, per_day=6)
    overrides["quota"] |= {"degraded_share": 0.5, "redis_timeout": 2.0}
    async with two_replicas(sqlite_storage, upstream, overrides) as (one, two):
        dead, alive = redis_cluster.ports[1], redis_cluster.ports[2]
        users = await users_by_node(one, redis_cluster, overrides["quota"]["key_prefix"], {dead, alive})
        keys = {port: {"X-API-Key": await one.new_key(user)} for port, user in users.items()}
        for gw in (one, two):  # both replicas have met the cluster
            assert (await post_mcp(gw.url, keys[alive], INIT)).status == 200
        redis_cluster.kill(dead)
        try:
            # The dead primary's account: this replica's share (3 of 6), counted here; never unlimited.
            statuses = [(await post_mcp(one.url, keys[dead], INIT)).status for _ in range(4)]
            assert statuses == [200, 200, 200, 429]
            assert degraded_admissions(one) == 3
            # The other account still counts exactly across both replicas (2 used above, 4 left).
            statuses = [(await post_mcp(gw.url, keys[alive], INIT)).status for gw in (one, two, one, two, one)]
            assert statuses == [200, 200, 200, 200, 429]
            assert degraded_admissions(one) == 3
            assert degraded_admissions(two) == 0
        finally:
            redis_cluster.restart(dead)
