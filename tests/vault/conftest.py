"""Fixtures of the vault tests: the real OpenID provider (rotating refresh tokens, 5-second access tokens, its
stand-in API under ``/api``) and gateways on a shared database and Redis, their vault seeded through the provider's
own code flow."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web

from gateway.clock import SystemClock
from gateway.identity.provider_config import ProviderConfig
from gateway.identity.providers import ProviderClient
from gateway.identity.sealing import generate_secret
from gateway.identity.web import IDENTITY
from gateway.metrics import METRICS
from gateway.vault.setup import VAULT, VAULT_SESSION
from tests.support.databases import Backend
from tests.support.gateway import UNUSED_UPSTREAM, GatewayHandle, running_gateway
from tests.support.oidc import OidcProvider, oidc_provider, sign_in
from tests.support.replicas import REDIS_URL

__all__ = ["oidc_provider"]

SERVICE = "corp"
SCOPES = ["openid", "offline_access", "email", "profile"]


class MovableClock(SystemClock):
    """The real time plus an offset the test moves (the provider keeps its own real clock)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class Outbound:
    """Every request the vault's HTTP session sent (method and URL), to prove that nothing went out."""

    sent: list[str] = field(default_factory=list)

    def session(self) -> aiohttp.ClientSession:
        async def on_start(_s: object, _c: object, params: aiohttp.TraceRequestStartParams) -> None:
            self.sent.append(f"{params.method} {params.url}")

        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(on_start)
        return aiohttp.ClientSession(auto_decompress=False, trace_configs=[trace])


def overrides(
    idp: OidcProvider, keys: str, prefix: str, public_url: str | None = None, plan: str = "free"
) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "identity": {"encryption_keys": keys},
        "identity_providers": {
            SERVICE: {
                "issuer": idp.issuer,
                "client_id": idp.client.client_id,
                "client_secret": idp.client.client_secret,
                "scopes": SCOPES,
                "authorization_params": {"prompt": "consent"},
            }
        },
        "services": {
            SERVICE: {
                "provider": SERVICE,
                "api_base": idp.issuer + "/api",
                "methods": ["GET", "POST", "PUT"],
                "forward_headers": ["Accept", "Content-Type", "X-Request-Id"],
            }
        },
        "redis": {"url": REDIS_URL},
        "quota": {"key_prefix": prefix, "default_plan": plan},
    }
    if public_url:
        raw["public_url"] = public_url
    return raw


@dataclass
class Caller:
    """An app's key and a user's identity token for it."""

    user_id: str
    api_key: str
    identity_token: str

    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key, "Authorization": f"Bearer {self.identity_token}"}


async def new_caller(gateway: GatewayHandle) -> Caller:
    user = await gateway.new_user()
    key, minted = await gateway.accounts.create_key(user, name="app")
    token = await gateway.app[IDENTITY].tokens.mint(subject=user.id, api_key_id=key.id, connected_services=[SERVICE])
    return Caller(user.id, minted.key, token)


async def connect(gateway: GatewayHandle, idp: OidcProvider, user_id: str) -> None:
    """The provider's code flow (``offline_access`` + ``prompt=consent``), saved through the vault's store API."""
    provider = ProviderConfig(
        name=SERVICE,
        issuer=idp.issuer,
        client_id=idp.client.client_id,
        client_secret=idp.client.client_secret,
        scopes=tuple(SCOPES),
        authorization_params=(("prompt", "consent"),),
    )
    async with aiohttp.ClientSession() as http:
        client = ProviderClient(provider, http, SystemClock())
        url, pending = await client.begin(idp.client.redirect_uris[0])
        back = urlsplit(await sign_in(idp, url))
        identity = await client.complete(pending, {k: v[0] for k, v in parse_qs(back.query).items()})
    assert identity.tokens.get("refresh_token")
    await gateway.app[VAULT].vault.save_identity(user_id, SERVICE, identity)


def sample(app: web.Application, name: str, **labels: str) -> float:
    return app[METRICS].registry.get_sample_value(name, labels) or 0.0


@contextlib.asynccontextmanager
async def gateways(
    db: Backend, idp: OidcProvider, clock: MovableClock, outbound: Outbound, count: int = 1, plan: str = "free"
) -> AsyncIterator[list[GatewayHandle]]:
    """``count`` replicas on one database and one Redis, with one public URL (so identity tokens are valid on all)."""
    keys, prefix = generate_secret("k1"), f"gw:test:{secrets.token_hex(6)}"
    public_url = f"http://127.0.0.1:{40000 + secrets.randbelow(20000)}" if count > 1 else None
    async with contextlib.AsyncExitStack() as stack:
        handles = []
        for _ in range(count):
            storage = await db.storage()
            session = await stack.enter_async_context(outbound.session())

            def prepare(app: web.Application, session: aiohttp.ClientSession = session) -> None:
                app[VAULT_SESSION] = session

            handles.append(
                await stack.enter_async_context(
                    running_gateway(
                        storage=storage,
                        upstream_url=UNUSED_UPSTREAM,
                        overrides=overrides(idp, keys, prefix, public_url, plan),
                        clock=clock,
                        prepare=prepare,
                    )
                )
            )
        yield handles


async def gather(*calls: Any) -> list[Any]:
    return list(await asyncio.gather(*calls))


def tmp_files(tmp_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(tmp_path.glob("gateway.db*")))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """One database several gateways share: SQLite, then PostgreSQL (a throwaway schema)."""
    backend = Backend(request.param, tmp_path)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture
async def postgres(tmp_path: Path) -> AsyncIterator[Backend]:
    backend = Backend("postgres", tmp_path)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def outbound() -> Outbound:
    return Outbound()
