"""A gateway with three registered clients and two accounts, for the dashboard tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.gateway import GatewayHandle
from tests.support.oauth_browser import Browser


@pytest.fixture
async def browser(gateway: GatewayHandle) -> AsyncIterator[Browser]:
    async with Browser(gateway.url) as b:
        yield b


@pytest.fixture
async def other_browser(gateway: GatewayHandle) -> AsyncIterator[Browser]:
    async with Browser(gateway.url) as b:
        yield b
