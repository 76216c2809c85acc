"""A gateway in front of the real example upstream with an authorization policy over its tools."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.clock import ManualClock
from gateway.storage import Storage
from tests.policy.scripted import mcp_like
from tests.support.gateway import GatewayHandle, running_gateway
from tests.support.scripted_upstream import ScriptedUpstream, scripted_upstream
from tests.support.upstream import UpstreamProcess

MATH_SENTENCE = "Do arithmetic with the add tool"
READ_SENTENCE = "Use the harmless tools: echo and whoami"
POLICY: dict[str, Any] = {
    "oauth": {"default_scopes": ["tools:read"]},
    "authorization": {
        "scopes": {
            "tools:read": {"description": READ_SENTENCE},
            "tools:math": {"description": MATH_SENTENCE, "implies": ["tools:read"]},
        },
        "rules": [
            {"name": "math", "tools": ["add"], "scopes": ["tools:math"], "weight": 10},
            {
                "name": "reading",
                "tools": ["echo", "who*"],
                "resources": ["info://"],
                "prompts": ["summ*"],
                "scopes": ["tools:read"],
            },
        ],
        "default_scopes": ["mcp:tools"],
    },
}


@pytest.fixture
async def policy_gateway(
    sqlite_storage: Storage, upstream: UpstreamProcess, clock: ManualClock
) -> AsyncIterator[GatewayHandle]:
    async with running_gateway(
        storage=sqlite_storage,
        upstream_url=upstream.mcp_url,
        upstream_sse_url=upstream.sse_url,
        overrides=POLICY,
        clock=clock,
    ) as gw:
        yield gw


@pytest.fixture
async def upstream_json() -> AsyncIterator[ScriptedUpstream]:
    """A scripted upstream answering JSON, lists paginated two by two."""
    async with scripted_upstream(mcp_like(sse=False)) as up:
        yield up
