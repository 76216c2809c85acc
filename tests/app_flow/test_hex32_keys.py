"""``api_keys.format: hex32``: the gateway mints ``sk_mcp_rank_`` + 32 hex keys, accepts them, and refuses a key of
any other shape before looking anything up."""

from __future__ import annotations

import re

from gateway.storage import Storage
from tests.support.counting_storage import CountingStorage
from tests.support.gateway import running_gateway
from tests.support.oauth_flows import post_mcp
from tests.support.upstream import UpstreamProcess


async def test_a_hex32_gateway_accepts_its_keys_and_refuses_other_shapes_without_a_lookup(
    sqlite_storage: Storage, upstream: UpstreamProcess
) -> None:
    storage = CountingStorage(sqlite_storage)
    overrides = {"api_keys": {"prefix": "sk_mcp_rank", "format": "hex32"}}
    async with running_gateway(
        storage=storage,  # type: ignore[arg-type]
        upstream_url=upstream.mcp_url,
        overrides=overrides,
    ) as gw:
        key = await gw.new_key(await gw.new_user())
        assert re.fullmatch(r"sk_mcp_rank_[0-9a-f]{32}", key)
        assert (await post_mcp(gw.url, {"X-API-Key": key})).status == 200
        looked_up = storage.key_lookups
        for wrong in (key.upper().replace("SK_MCP_RANK_", "sk_mcp_rank_"), key + "0", key[:-1]):
            assert (await post_mcp(gw.url, {"X-API-Key": wrong})).status == 401
        assert storage.key_lookups == looked_up
