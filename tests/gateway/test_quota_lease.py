"""``quota.lease``: a replica spends a leased slice of the account's windows locally, over the HTTP surface."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from gateway.quota import Plan, RedisLimiter
from gateway.storage import Storage
from tests.gateway.test_quota import EMAIL, LIST, REDIS_URL, plan_overrides
from tests.support.gateway import running_gateway
from tests.support.oauth_flows import post_mcp
from tests.support.upstream import UpstreamProcess

pytestmark = pytest.mark.redis


async def day_count(prefix: str, account: str, per_day: int) -> int:
    client = Redis.from_url(REDIS_URL)
    try:
        (key,) = RedisLimiter(client, prefix=prefix).keys(account, Plan("tiny", per_day=per_day))
        return int(await client.hget(key, "n") or 0)
    finally:
        await client.aclose()


@pytest.mark.parametrize(("lease", "held_while_serving"), [(True, 125), (False, 10)])
async def test_with_the_lease_on_ten_calls_charge_one_slice_and_shutdown_gives_back_what_was_not_spent(
    sqlite_storage: Storage, upstream: UpstreamProcess, quota_prefix: str, lease: bool, held_while_serving: int
):
    overrides = {**plan_overrides(1000, key_prefix=quota_prefix, lease=lease), "redis": {"url": REDIS_URL}}
    async with running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url, overrides=overrides) as gw:
        user = await gw.new_user(EMAIL)
        key = {"X-API-Key": await gw.new_key(user)}
        replies = [await post_mcp(gw.url, key, LIST) for _ in range(10)]
        assert [r.status for r in replies] == [200] * 10
        assert replies[-1].headers["RateLimit"].startswith('"day";r=990')
        # degraded_share 0.5 → 2 replicas, k = 4: a slice is 1000 // 8 = 125, leased once for all ten calls.
        assert await day_count(quota_prefix, user.id, 1000) == held_while_serving
    assert await day_count(quota_prefix, user.id, 1000) == 10
