"""Fixtures shared by the OAuth security tests: a registered app and a gateway offering two scopes."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis_asyncio

from gateway.storage import Storage
from tests.support.gateway import GatewayHandle, running_gateway
from tests.support.oauth_flows import EMAIL, TWO_SCOPES, OAuthApp, register
from tests.support.upstream import UpstreamProcess


@pytest.fixture
async def app(gateway: GatewayHandle) -> OAuthApp:
    """A client registered at the gateway, and the account ``EMAIL`` that will sign in."""
    await gateway.new_user(EMAIL)
    return await register(gateway.url)


@pytest.fixture
async def scoped_gateway(sqlite_storage: Storage, upstream: UpstreamProcess) -> AsyncIterator[GatewayHandle]:
    """A gateway offering ``mcp:tools`` and ``mcp:read`` (``/mcp`` requires ``mcp:tools``)."""
    async with running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url, overrides=TWO_SCOPES) as gw:
        await gw.new_user(EMAIL)
        yield gw


REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def quota_prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own in the real Redis, removed afterwards."""
    prefix = f"gwtest:{secrets.token_hex(6)}"
    client = redis_asyncio.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        pytest.fail(f"Redis is unreachable at {REDIS_URL} ({exc}); redis tests fail rather than skip", pytrace=False)
    try:
        yield prefix
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
