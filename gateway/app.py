"""The application factory: reads like a table of contents of the gateway's features."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from gateway.admin import setup_admin
from gateway.apikeys import ApiKeyFormat
from gateway.appkeys import CLOCK, CONFIG, STORAGE, UPSTREAM_SESSION
from gateway.audit import AUDIT, AuditLog
from gateway.authn import Authenticator, Challenge
from gateway.clock import Clock, SystemClock
from gateway.config import GatewayConfig
from gateway.dashboard import setup_dashboard
from gateway.errors import error_middleware
from gateway.health import setup_health
from gateway.housekeeping import housekeeping_ctx
from gateway.identity.web import setup_identity
from gateway.last_used import LastUsedRecorder
from gateway.metrics import METRICS, Metrics
from gateway.metrics_endpoint import setup_metrics_endpoint
from gateway.oauth import setup_oauth
from gateway.oauth.context import OAUTH_SETTINGS, OAuthSettings
from gateway.oauth.metadata import resource_metadata_url
from gateway.proxy.context import PROXY, ProxyContext
from gateway.proxy.cors import add_cors_headers, cors_middleware
from gateway.proxy.guard import BLOCKED, BlockedAddresses
from gateway.proxy.legacy_sse import setup_legacy_sse
from gateway.proxy.sessions import SessionBindings
from gateway.proxy.streamable import setup_streamable
from gateway.proxy.streams import SHUTTING_DOWN, OpenStreams
from gateway.proxy.upstream import Upstream, new_client_session
from gateway.quota import QuotaLimiter, make_limiter, quota_redis_client
from gateway.quota.gate import QuotaGate
from gateway.quota.streams import StreamSlots
from gateway.request_metrics import request_metrics, setup_request_metrics
from gateway.revocation import REVOCATIONS, LocalRevocationBus
from gateway.revocation_redis import RedisRevocationBus
from gateway.storage import Storage, open_storage
from gateway.throttle import setup_throttle
from gateway.usage_history import USAGE_HISTORY, UsageRecorder
from gateway.web_pages import page_errors, setup_pages

log = logging.getLogger("gateway.app")

QUOTA_LIMITER = web.AppKey("quota_limiter", QuotaLimiter)
STREAM_SLOTS = web.AppKey("stream_slots", StreamSlots)
REDIS = web.AppKey("redis", Redis)
"""The Redis client of the quota and the protective limits; absent when ``redis.url`` is not set."""

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
    """Build the gateway. Collaborators passed in are used as they are and not closed by the app."""
    app = web.Application(
        middlewares=[request_metrics, cors_middleware, error_middleware, page_errors],
        client_max_size=config.limits.max_body_bytes,
    )
    app[CONFIG] = config
    app[CLOCK] = clock or SystemClock()
    app[METRICS] = metrics or Metrics()
    app[AUDIT] = audit or AuditLog()
    redis_url = config.redis.url
    app[REVOCATIONS] = (
        RedisRevocationBus(redis_url, config.redis.revocation_channel) if redis_url else LocalRevocationBus()
    )
    app[BLOCKED] = BlockedAddresses()
    app[OAUTH_SETTINGS] = OAuthSettings.from_config(config, app[CLOCK])
    app.cleanup_ctx.append(_storage_ctx(storage))
    app.cleanup_ctx.append(_upstream_ctx(upstream_session))
    app.cleanup_ctx.append(_redis_ctx)
    app.cleanup_ctx.append(_quota_ctx)
    setup_throttle(app, REDIS)
    app.cleanup_ctx.append(_proxy_ctx)
    app.cleanup_ctx.append(_revocation_ctx)
    app.on_shutdown.append(_close_streams)
    app.cleanup_ctx.append(housekeeping_ctx)
    app.on_response_prepare.append(_server_header)
    app.on_response_prepare.append(add_cors_headers)
    setup_request_metrics(app)
    setup_health(app)
    setup_metrics_endpoint(app)
    setup_pages(app)
    setup_oauth(app)
    setup_dashboard(app)
    setup_admin(app)
    setup_identity(app)
    setup_streamable(app)
    setup_legacy_sse(app)
    return app


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
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
    @contextlib.asynccontextmanager
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if given is not None:
            app[UPSTREAM_SESSION] = given
            yield
            return
        upstream = app[CONFIG].upstream
        async with new_client_session(
            connect_timeout=upstream.connect_timeout, max_connections=upstream.max_connections
        ) as session:
            app[UPSTREAM_SESSION] = session
            yield

    return ctx


@contextlib.asynccontextmanager
async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    if config.redis.url is None:
        yield
        return
    redis = quota_redis_client(config.redis.url, timeout=config.quota.redis_timeout)
    app[REDIS] = redis
    try:
        yield
    finally:
        await redis.aclose()


@contextlib.asynccontextmanager
async def _quota_ctx(app: web.Application) -> AsyncIterator[None]:
    """One counter per account: in Redis when ``redis.url`` is set (degrading to a per-replica share while it
    is unreachable), otherwise in this process; the same for the stream leases."""
    config, metrics, redis = app[CONFIG], app[METRICS], app.get(REDIS)
    metrics.quota_degraded.set(0)
    app[QUOTA_LIMITER] = make_limiter(
        config.quota,
        clock=app[CLOCK],
        redis=redis,
        on_degraded_change=lambda degraded: metrics.quota_degraded.set(1 if degraded else 0),
    )
    app[STREAM_SLOTS] = StreamSlots(
        redis,
        clock=app[CLOCK],
        prefix=config.quota.key_prefix,
        lease_seconds=config.quota.stream_lease_seconds,
        share=config.quota.degraded_share,
        timeout=config.quota.redis_timeout,
        retry_interval=config.quota.redis_retry_interval,
    )
    yield


@contextlib.asynccontextmanager
async def _proxy_ctx(app: web.Application) -> AsyncIterator[None]:
    config, storage, clock = app[CONFIG], app[STORAGE], app[CLOCK]
    settings = app[OAUTH_SETTINGS]
    interval = config.api_keys.last_used_flush_interval
    key_use = LastUsedRecorder(storage.touch_api_keys, interval=interval, name="api key")
    grant_use = LastUsedRecorder(storage.touch_families, interval=interval, name="grant")
    sessions = SessionBindings(storage, clock)
    authn = Authenticator(
        key_format=ApiKeyFormat(config.api_keys.prefix),
        users=storage,
        api_keys=storage,
        grants=storage,
        clock=clock,
        key_use=key_use,
        grant_use=grant_use,
        challenge=Challenge(resource_metadata_url(settings), " ".join(config.oauth.default_scopes)),
        resource=settings.resource,
        required_scopes=config.oauth.default_scopes,
        metrics=app[METRICS],
    )
    streams = OpenStreams(authn, storage, clock, interval=config.revocation.stream_recheck_interval)
    bus = app[REVOCATIONS]
    bus.listen(authn.on_revocation)
    bus.listen(streams.on_revocation)
    bus.listen_gaps(authn.flush)
    usage = app[USAGE_HISTORY] = UsageRecorder(storage, clock, interval=config.accounts.usage_flush_interval)
    app[PROXY] = ProxyContext(
        authn=authn,
        sessions=sessions,
        upstream=Upstream(
            app[UPSTREAM_SESSION],
            first_byte_timeout=config.upstream.first_byte_timeout,
            idle_timeout=config.upstream.stream_idle_timeout,
            metrics=app[METRICS],
        ),
        upstream_url=config.upstream.url,
        upstream_sse_url=config.upstream.sse_url,
        public_url=config.public_url,
        allowed_origins=frozenset(config.security.allowed_origins),
        trusted_proxies=frozenset(config.security.trusted_proxies),
        identity_headers=config.upstream.identity_headers,
        quota=QuotaGate(app[QUOTA_LIMITER], config.quota, app[STREAM_SLOTS], app[METRICS], on_admit=usage.record),
        streams=streams,
    )
    async with key_use.running(), grant_use.running(), usage.running(), streams.running():
        yield


@contextlib.asynccontextmanager
async def _revocation_ctx(app: web.Application) -> AsyncIterator[None]:
    """With ``redis.url``, hear the other replicas' revocations (after every listener is registered)."""
    bus = app[REVOCATIONS]
    if not isinstance(bus, RedisRevocationBus):
        yield
        return
    async with bus.running():
        yield


async def _close_streams(app: web.Application) -> None:
    """On shutdown, before in-flight requests drain: end every stream with a final event (clients reconnect)."""
    app[PROXY].streams.close_all(SHUTTING_DOWN)
