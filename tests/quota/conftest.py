"""Fixtures for quota tests: a real Redis, with a key namespace of its own per test.

Redis tests use ``GATEWAY_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) and fail, never skip,
when it is unreachable. Each test gets a unique key prefix and deletes only the keys under it: nothing is
ever flushed.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class RedisNamespace:
    """A test's own corner of the shared Redis: a key prefix, fresh account ids, and clean-up."""

    def __init__(self, client: Redis, url: str) -> None:
        self.client = client
        self.url = url
        self.prefix = f"gwt{secrets.token_hex(6)}:q"
        self._clients: list[Redis] = []

    def account(self) -> str:
        return f"usr_{secrets.token_hex(8)}"

    def adopt(self, client: Redis) -> Redis:
        """Close ``client`` with the fixture."""
        self._clients.append(client)
        return client

    async def keys(self) -> list[str]:
        return sorted([key.decode() async for key in self.client.scan_iter(match=f"{self.prefix}:*", count=1000)])

    async def close(self) -> None:
        for client in self._clients:
            await client.aclose()
        keys = await self.keys()
        if keys:
            await self.client.delete(*keys)
        await self.client.aclose()


async def connect_redis(url: str = REDIS_URL) -> Redis:
    client = Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        pytest.fail(
            f"Redis is unreachable at {url} ({type(exc).__name__}: {exc}). Start it (redis-server --daemonize yes "
            "--bind 127.0.0.1 --port 6379 --save '' --appendonly no) or point GATEWAY_TEST_REDIS_URL at a server; "
            "redis tests fail rather than skip.",
            pytrace=False,
        )
    return client


MINUTE_MARGIN = 5.0
"""Seconds before a Redis-time minute ends in which a counting test does not start."""


async def start_well_inside_a_minute(client: Redis) -> None:
    """Counting tests expect every admit to land in one minute window; one starting in the last seconds of
    a minute would see the window roll over. Wait (at most ``MINUTE_MARGIN`` s) for the next minute instead."""
    seconds, micros = await client.time()
    into_minute = seconds % 60 + micros / 1e6
    if into_minute > 60 - MINUTE_MARGIN:
        await asyncio.sleep(60 - into_minute + 0.05)


@pytest.fixture
async def redis_ns() -> AsyncIterator[RedisNamespace]:
    namespace = RedisNamespace(await connect_redis(), REDIS_URL)
    await start_well_inside_a_minute(namespace.client)
    try:
        yield namespace
    finally:
        await namespace.close()
