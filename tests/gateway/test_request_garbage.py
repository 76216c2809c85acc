"""A proxied request leaves no reference cycles among the gateway's objects: everything it built is freed by
reference counting as it ends, so the garbage collector (rarely run: ``gateway.server.settle_heap``) finds nothing."""

from __future__ import annotations

import gc

import aiohttp

from gateway.storage import Storage
from tests.support.gateway import running_gateway
from tests.support.scripted_upstream import jsonrpc, scripted_upstream

MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


async def test_proxied_requests_leave_no_cyclic_garbage_among_the_gateways_objects(sqlite_storage: Storage):
    async with (
        scripted_upstream() as upstream,
        running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url) as gw,
    ):
        key = await gw.new_key(await gw.new_user())
        headers = {**MCP_HEADERS, "X-API-Key": key}
        async with aiohttp.ClientSession() as http:

            async def call() -> None:
                async with http.post(gw.mcp_url, data=jsonrpc("tools/call", {"name": "echo"}), headers=headers) as r:
                    assert r.status == 200
                    await r.read()

            for _ in range(5):  # caches, the quota lease, pooled connections
                await call()
            gc.collect()
            gc.set_debug(gc.DEBUG_SAVEALL)
            try:
                for _ in range(50):
                    await call()
                gc.collect()
                left = sorted({type(o).__qualname__ for o in gc.garbage if type(o).__module__.startswith("gateway")})
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
    assert left == [], f"objects of these gateway types were only freed by the garbage collector: {left}"
