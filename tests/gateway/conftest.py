"""Fixtures shared by the OAuth security tests: a registered app and a gateway offering two scopes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

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
