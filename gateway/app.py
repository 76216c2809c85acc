"""The application factory: reads like a table of contents of the gateway's features."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from gateway.appkeys import CLOCK, CONFIG, REDIS, STORAGE, UPSTREAM_POOLS, UPSTREAM_SESSION
from gateway.audit import AUDIT, AuditLog
from gateway.clock import Clock, SystemClock
from gateway.config import GatewayConfig
from gateway.credentials.setup import setup_credentials
from gateway.dashboard import setup_dashboard
from gateway.flight.setup import setup_flight
from gateway.hooks import add_response_hook, setup_hooks
from gateway.housekeeping import housekeeping_ctx
from gateway.identity.app_flow import setup_app_flow
from gateway.identity.signin import setup_provider_sign_in
from gateway.identity.web import setup_identity
from gateway.metrics import METRICS, Metrics
from gateway.metrics_endpoint import setup_metrics_endpoint
from gateway.oauth import setup_oauth
from gateway.oauth.context import OAUTH_SETTINGS, OAuthSettings
from gateway.policy.setup import setup_policy
from gateway.proxy.context import setup_proxy
from gateway.proxy.cors import add_cors_headers
from gateway.proxy.guard import BLOCKED, BlockedAddresses
from gateway.proxy.upstream import new_client_session, new_connection_pools
from gateway.quota import quota_redis_client
from gateway.quota.setup import setup_quota
from gateway.request_metrics import request_metrics, setup_request_metrics
from gateway.revocation import REVOCATIONS, LocalRevocationBus
from gateway.revocation_redis import RedisRevocationBus
from gateway.routes import error_middleware, setup_routes
from gateway.storage import Storage, open_storage
from gateway.throttle import setup_throttle
from gateway.vault.listing import setup_connect
from gateway.vault.setup import setup_vault

log = logging.getLogger("gateway.app")

CleanupCtx = Callable[[web.Application], contextlib.AbstractAsyncContextManager[None]]


def create_app(
    config: GatewayConfig,
    *,
    storage: Storage | None = None,
    clock: Clock | None = None,
    upstream_session: aiohttp.ClientSession | None = None,
    metrics: Metrics | None = None,
    audit: AuditLog | None = None,
) -> web.Application:
    """Build the gateway. Collaborators passed in are used as they are and not closed by the app.

    One way in for every feature: the shared collaborators (config, clock, metrics, audit, storage, Redis, the
    upstream session, the revocation bus) are published under typed app keys first; then each feature's
    ``setup_x(app)`` appends a cleanup context that reads those keys (and the contexts of features set up before
    it) and publishes its own context under its own key — quota → ``QUOTA_GATE``, credentials →
    ``AUTHENTICATOR``, proxy → ``PROXY``, dashboard → ``DASHBOARD``. No feature builds another's collaborators."""
    app = web.Application(
        middlewares=[request_metrics, error_middleware],
        client_max_size=config.limits.max_body_bytes,
    )
    setup_hooks(app)
    app[CONFIG] = config
    app[CLOCK] = clock or SystemClock()
    app[METRICS] = metrics or Metrics()
    app[AUDIT] = audit or AuditLog(api_key_prefix=config.api_keys.prefix)
    redis_url = config.redis.url
    app[REVOCATIONS] = (
        RedisRevocationBus(redis_url, config.redis.revocation_channel, config.redis.cluster)
        if redis_url
        else LocalRevocationBus()
    )
    app[BLOCKED] = BlockedAddresses()
    app[OAUTH_SETTINGS] = OAuthSettings.from_config(config, app[CLOCK])
    app.cleanup_ctx.append(_storage_ctx(storage))
    app.cleanup_ctx.append(_upstream_ctx(upstream_session))
    app.cleanup_ctx.append(_redis_ctx)
    # Features, in dependency order (a context may read only the keys published above it).
    setup_quota(app)
    setup_throttle(app, REDIS)
    setup_credentials(app)
    setup_identity(app)  # before the proxy: it signs the upstream's identity JWT
    setup_policy(app)
    setup_proxy(app)
    app.cleanup_ctx.append(_revocation_ctx)
    app.cleanup_ctx.append(housekeeping_ctx)
    setup_flight(app)
    add_response_hook(app, _server_header)
    add_response_hook(app, add_cors_headers)
    setup_request_metrics(app)
    setup_metrics_endpoint(app)
    setup_oauth(app)
    setup_dashboard(app)
    setup_provider_sign_in(app)
    setup_app_flow(app)
    setup_vault(app)
    setup_connect(app)
    setup_routes(app)
    return app


def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "mcp-gateway"


def _storage_ctx(given: Storage | None) -> CleanupCtx:
    @contextlib.asynccontextmanager
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if given is not None:
            app[STORAGE] = given
            yield
            return
        config = app[CONFIG].storage
        storage = open_storage(
            config.url,
            pool_min=config.pool_min,
            pool_max=config.pool_max,
            search_path=config.schema,
            pgbouncer=config.pgbouncer,
        )
        await storage.open()
        try:
            await storage.check_schema()
            app[STORAGE] = storage
            yield
        finally:
            await storage.close()

    return ctx


def _upstream_ctx(given: aiohttp.ClientSession | None) -> CleanupCtx:
    """The upstream's connection pools (proxied requests), and the readiness probe's session unless ``given``."""

    @contextlib.asynccontextmanager
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        upstream = app[CONFIG].upstream
        pools = new_connection_pools(connect_timeout=upstream.connect_timeout, max_connections=upstream.max_connections)
        app[UPSTREAM_POOLS] = pools
        try:
            if given is not None:
                app[UPSTREAM_SESSION] = given
                yield
                return
            async with new_client_session(connect_timeout=upstream.connect_timeout) as session:
                app[UPSTREAM_SESSION] = session
                yield
        finally:
            await pools.close()

    return ctx


@contextlib.asynccontextmanager
async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    if config.redis.url is None:
        yield
        return
    redis = quota_redis_client(config.redis.url, timeout=config.quota.redis_timeout, cluster=config.redis.cluster)
    app[REDIS] = redis
    if isinstance(redis, RedisCluster):
        # Learn the cluster's topology now, not on the first request (which would take longer than the quota's
        # Redis timeout and degrade that one call). A node that is down now is learnt later, as for any client.
        with contextlib.suppress(RedisError, RedisClusterException, OSError):
            await redis.initialize()
    try:
        yield
    finally:
        await redis.aclose()


@contextlib.asynccontextmanager
async def _revocation_ctx(app: web.Application) -> AsyncIterator[None]:
    """With ``redis.url``, hear the other replicas' revocations (after every listener is registered)."""
    bus = app[REVOCATIONS]
    if not isinstance(bus, RedisRevocationBus):
        yield
        return
    async with bus.running():
        yield
