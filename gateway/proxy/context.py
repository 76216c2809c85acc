"""What the proxy handlers share: their collaborators and the checks every MCP request passes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web
from multidict import CIMultiDict

from gateway.appkeys import CLOCK, CONFIG, STORAGE, UPSTREAM_SESSION
from gateway.credentials import Authenticator, Principal
from gateway.credentials.setup import AUTHENTICATOR, WATERMARK
from gateway.errors import OriginNotAllowed
from gateway.metrics import METRICS
from gateway.net import client_address
from gateway.proxy.body import close_after_unreadable_body
from gateway.proxy.headers import upstream_request_headers
from gateway.proxy.sessions import SessionBindings
from gateway.proxy.streams import SHUTTING_DOWN, OpenStreams
from gateway.proxy.upstream import Upstream
from gateway.quota.gate import QuotaGate
from gateway.quota.setup import QUOTA_GATE
from gateway.revocation import REVOCATIONS


@dataclass(frozen=True)
class ProxyContext:
    authn: Authenticator
    sessions: SessionBindings
    upstream: Upstream
    upstream_url: str
    upstream_sse_url: str | None
    public_url: str
    allowed_origins: frozenset[str]
    trusted_proxies: frozenset[str]
    identity_headers: bool
    quota: QuotaGate
    streams: OpenStreams
    forward_headers: tuple[str, ...] = ()
    """``upstream.forward_headers``: request fields forwarded besides the MCP ones."""

    @property
    def public_origin(self) -> str:
        parts = urlsplit(self.public_url)
        return f"{parts.scheme}://{parts.netloc}"

    def origin_allowed(self, origin: str) -> bool:
        normalised = origin.strip().lower().rstrip("/")
        return normalised == self.public_origin or normalised in self.allowed_origins

    def check_origin(self, request: web.Request) -> None:
        """MCP transports: validate ``Origin`` when present, 403 when not allowed (DNS rebinding)."""
        origin = request.headers.get("Origin")
        if origin is not None and not self.origin_allowed(origin):
            raise OriginNotAllowed("Origin not allowed")

    def upstream_headers(self, request: web.Request, principal: Principal) -> CIMultiDict[str]:
        parts = urlsplit(self.public_url)
        return upstream_request_headers(
            request.headers,
            principal,
            peer=client_address(request, self.trusted_proxies),
            public_scheme=parts.scheme,
            public_host=parts.netloc,
            identity=self.identity_headers,
            forward=self.forward_headers,
        )


PROXY = web.AppKey("proxy", ProxyContext)


@contextlib.asynccontextmanager
async def _proxy_ctx(app: web.Application) -> AsyncIterator[None]:
    config, storage, clock, metrics, authn = app[CONFIG], app[STORAGE], app[CLOCK], app[METRICS], app[AUTHENTICATOR]
    streams = OpenStreams(authn, clock)
    app[REVOCATIONS].listen(streams.on_revocation)
    app[WATERMARK].listen(streams.on_watermark)
    app[PROXY] = ProxyContext(
        authn=authn,
        sessions=SessionBindings(storage, clock),
        upstream=Upstream(
            app[UPSTREAM_SESSION],
            first_byte_timeout=config.upstream.first_byte_timeout,
            idle_timeout=config.upstream.stream_idle_timeout,
            metrics=metrics,
        ),
        upstream_url=config.upstream.url,
        upstream_sse_url=config.upstream.sse_url,
        public_url=config.public_url,
        allowed_origins=frozenset(config.security.allowed_origins),
        trusted_proxies=frozenset(config.security.trusted_proxies),
        identity_headers=config.upstream.identity_headers,
        forward_headers=config.upstream.forward_headers,
        quota=app[QUOTA_GATE],
        streams=streams,
    )
    yield


async def _close_streams(app: web.Application) -> None:
    """On shutdown, before in-flight requests drain: end every stream with a final event (clients reconnect)."""
    app[PROXY].streams.close_all(SHUTTING_DOWN)


def setup_proxy(app: web.Application) -> None:
    """The MCP endpoints' shared context (``PROXY``), built after the credentials and the quota (the MCP routes
    are registered separately)."""
    app.cleanup_ctx.append(_proxy_ctx)
    app.on_shutdown.append(_close_streams)
    app.on_response_prepare.append(close_after_unreadable_body)
