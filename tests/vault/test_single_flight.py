"""Refresh exactly once across replicas: 8 concurrent calls with an expired token through 2 gateways on one
database and one Redis make one refresh at the rotating provider, all succeed, and the grant stays alive. Without
the single flight the same scenario kills the grant (the provider sees one refresh token twice)."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp

from gateway.vault.setup import VAULT
from gateway.vault.singleflight import LocalLock, RefreshCoordinator
from gateway.vault.vault import Connection
from tests.support.databases import Backend
from tests.support.gateway import GatewayHandle
from tests.support.oidc import OidcProvider
from tests.vault.conftest import SERVICE, Caller, MovableClock, Outbound, connect, gateways, new_caller, sample

REFRESHES = "gateway_vault_refreshes_total"


async def eight_calls(http: aiohttp.ClientSession, replicas: list[GatewayHandle], caller: Caller) -> list[int]:
    async def call(i: int) -> int:
        url = f"{replicas[i % 2].url}/v1/proxy/{SERVICE}/profile"
        async with http.get(url, headers=caller.headers()) as response:
            await response.read()
            return response.status

    return list(await asyncio.gather(*(call(i) for i in range(8))))


async def test_eight_concurrent_calls_through_two_replicas_refresh_once_and_the_grant_stays_alive(
    postgres: Backend, oidc_provider: OidcProvider, clock: MovableClock, outbound: Outbound
) -> None:
    async with gateways(postgres, oidc_provider, clock, outbound, count=2) as replicas:
        async with aiohttp.ClientSession() as http:
            caller = await new_caller(replicas[0])
            await connect(replicas[0], oidc_provider, caller.user_id)
            clock.advance(60)
            assert await eight_calls(http, replicas, caller) == [200] * 8
            assert sum(sample(gw.app, REFRESHES, service=SERVICE) for gw in replicas) == 1
            clock.advance(60)  # the grant is alive: the rotated refresh token works again
            assert await eight_calls(http, replicas, caller) == [200] * 8
            assert sum(sample(gw.app, REFRESHES, service=SERVICE) for gw in replicas) == 2


class NoSingleFlight(RefreshCoordinator):
    """Every caller refreshes on its own, with no lock: what the single flight prevents."""

    async def fresh(self, seen: Connection) -> Connection:
        return await self._refresh(seen)


async def test_without_the_single_flight_the_same_calls_kill_the_rotating_grant(
    postgres: Backend, oidc_provider: OidcProvider, clock: MovableClock, outbound: Outbound
) -> None:
    async with gateways(postgres, oidc_provider, clock, outbound, count=2) as replicas:
        for gw in replicas:
            services = gw.app[VAULT]
            safe = services.refresher
            services.refresher = NoSingleFlight(
                services.vault, safe._endpoints, _NoLock(), clock.now, on_refresh=safe._on_refresh
            )
        async with aiohttp.ClientSession() as http:
            caller = await new_caller(replicas[0])
            await connect(replicas[0], oidc_provider, caller.user_id)
            clock.advance(60)
            first = await eight_calls(http, replicas, caller)
            clock.advance(60)
            second = await eight_calls(http, replicas, caller)
        assert 401 in first + second  # service_reconnect_required: the provider revoked the grant


class _NoLock(LocalLock):
    def hold(self, key: str) -> contextlib.AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()
