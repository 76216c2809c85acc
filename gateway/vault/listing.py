"""``connected_services``: the live connections of a user, for the identity tokens minted for them.

``setup_connect`` publishes ``CONNECTED_SERVICES`` (after ``setup_vault``); the app flow's token minting reads it
when present. Broken connections (``service_reconnect_required``) and services no longer configured are left out.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from gateway.proxy.context import PROXY
from gateway.vault.setup import VAULT
from gateway.vault.vault import CONNECTED

ConnectedServices = Callable[[str], Awaitable[list[str]]]
CONNECTED_SERVICES: web.AppKey[ConnectedServices] = web.AppKey("connected_services")


def setup_connect(app: web.Application) -> None:
    app.cleanup_ctx.append(_connect_ctx)


@contextlib.asynccontextmanager
async def _connect_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[VAULT]

    async def connected(user_id: str) -> list[str]:
        rows = await services.vault.list_connections(user_id)
        names = services.services.names
        return sorted(r.service for r in rows if r.status == CONNECTED and r.service in names)

    app[CONNECTED_SERVICES] = connected
    proxy = app.get(PROXY)
    if proxy is not None and proxy.identity is not None:
        proxy.identity.connected_services = connected  # the upstream's identity JWT lists them too
    yield
