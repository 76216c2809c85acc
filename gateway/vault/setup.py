"""Wires the vault into the app: ``setup_vault(app)`` publishes ``VAULT`` (after the storage, Redis, the identity
services and the credential layer). The route ``/v1/proxy/{service}/{path}`` is a line of the route table."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from gateway.appkeys import CLOCK, CONFIG, REDIS, STORAGE
from gateway.audit import AUDIT
from gateway.errors import ServiceUnavailable
from gateway.identity.app_verify import verify_identity_token
from gateway.identity.providers import ProviderClient
from gateway.identity.sealing import EncryptionKeys
from gateway.metrics import METRICS, Metrics, bounded
from gateway.vault.config import ServicesConfig
from gateway.vault.refresh import ProviderTokenEndpoint, TokenEndpoint
from gateway.vault.singleflight import LocalLock, RedisLock, RefreshCoordinator, RefreshLock
from gateway.vault.vault import Vault

IdentityTokenVerifier = Callable[[str], Awaitable[dict[str, Any]]]
"""The hook through which the proxy verifies identity tokens: takes the token, returns its claims or raises
``InvalidIdentityToken``. Plugged into the app flow's revocation-aware ``verify_identity_token``
(``gateway.identity.app_verify``): signature, issuer, audience, expiry, and the key and grant still standing."""


@dataclass
class VaultServices:
    vault: Vault
    refresher: RefreshCoordinator
    services: ServicesConfig
    session: aiohttp.ClientSession
    """Calls to the services' APIs and token endpoints (no automatic decompression: bodies relay as they are)."""
    verify_identity_token: IdentityTokenVerifier
    metrics: Metrics
    keys: EncryptionKeys | None = None
    """``identity.encryption_keys``, parsed once (None: not configured)."""

    def label(self, service: str) -> str:
        return bounded(service, self.services.names)

    def sealing_keys(self) -> EncryptionKeys:
        """The keys sealing tokens and pending connections; 503 when ``identity.encryption_keys`` is not set."""
        if self.keys is None:
            raise ServiceUnavailable("Connected services are not configured on this gateway (identity.encryption_keys)")
        return self.keys


VAULT = web.AppKey("vault", VaultServices)
VAULT_SESSION = web.AppKey("vault_session", aiohttp.ClientSession)
"""Optional: a session tests pass in (set before the app starts); otherwise the vault opens its own."""


def setup_vault(app: web.Application) -> None:
    app.cleanup_ctx.append(_vault_ctx)


@contextlib.asynccontextmanager
async def _vault_ctx(app: web.Application) -> AsyncIterator[None]:
    config, clock, metrics, audit = app[CONFIG], app[CLOCK], app[METRICS], app[AUDIT]
    given = app.get(VAULT_SESSION)
    async with contextlib.AsyncExitStack() as stack:
        session = given if given is not None else None
        if session is None:
            session = await stack.enter_async_context(aiohttp.ClientSession(auto_decompress=False))
        services = config.services

        def label(service: str) -> str:
            return bounded(service, services.names)

        keys = EncryptionKeys.parse(config.identity.encryption_keys) if config.identity.encryption_keys else None
        vault = Vault(
            app[STORAGE],
            keys,
            clock,
            on_unseal_failure=lambda service: metrics.vault_decryption_failures.labels(service=label(service)).inc(),
        )
        clients: dict[str, TokenEndpoint] = {}

        def endpoint(service: str) -> TokenEndpoint:
            found = services.get(service)
            provider = config.identity_providers.get(found.provider) if found is not None else None
            if provider is None:
                raise LookupError(service)
            if provider.name not in clients:
                clients[provider.name] = ProviderTokenEndpoint(ProviderClient(provider, session, clock), session)
            return clients[provider.name]

        def on_refresh(user_id: str, service: str, outcome: str) -> None:
            if outcome == "ok":
                metrics.vault_refreshes.labels(service=label(service)).inc()
                return
            metrics.vault_refresh_failures.labels(service=label(service), kind=outcome).inc()
            audit.record("service.refresh_failed", reason=outcome, user_id=user_id, service=label(service))
            if outcome == "refused":
                metrics.vault_broken.labels(service=label(service)).inc()

        _initialise_series(metrics, services)
        redis = app.get(REDIS)
        lock: RefreshLock = (
            RedisLock(redis, f"{config.quota.key_prefix}:vault-refresh", monotonic=clock.monotonic)
            if redis is not None
            else LocalLock()
        )
        refresher = RefreshCoordinator(vault, endpoint, lock, clock.now, on_refresh=on_refresh)
        app[VAULT] = VaultServices(
            vault=vault,
            refresher=refresher,
            services=services,
            session=session,
            verify_identity_token=functools.partial(verify_identity_token, app),
            metrics=metrics,
            keys=keys,
        )
        yield


def _initialise_series(metrics: Metrics, services: ServicesConfig) -> None:
    """Every series of every configured service (and ``other``) exists from the start, at 0 (dashboards and
    ``rate()`` see a quiet service, not a missing one)."""
    for service in (*sorted(services.names), "other"):
        for status_class in ("2xx", "3xx", "4xx", "5xx"):
            metrics.vault_proxied.labels(service=service, status_class=status_class)
        metrics.vault_refreshes.labels(service=service)
        for kind in ("refused", "failed"):
            metrics.vault_refresh_failures.labels(service=service, kind=kind)
        metrics.vault_broken.labels(service=service)
        metrics.vault_decryption_failures.labels(service=service)
