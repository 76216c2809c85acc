"""What the proxy handlers share: their collaborators and the checks every MCP request passes."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp import web
from multidict import CIMultiDict

from gateway.appkeys import CLOCK, CONFIG, STORAGE, UPSTREAM_POOLS
from gateway.clock import Clock
from gateway.config import GatewayConfig
from gateway.credentials import Authenticator, Principal
from gateway.credentials.setup import AUTHENTICATOR, WATERMARK
from gateway.errors import OriginNotAllowed
from gateway.hooks import add_response_hook
from gateway.identity.signing_keys import SigningKeys
from gateway.identity.upstream import UpstreamIdentity
from gateway.identity.web import IDENTITY
from gateway.metrics import METRICS
from gateway.net import client_address
from gateway.proxy.body import close_after_unreadable_body
from gateway.proxy.headers import (
    DEFAULT_IDENTITY_HEADER,
    forwarded_names,
    identity_fields,
    upstream_request_headers,
)
from gateway.proxy.sessions import SessionBindings
from gateway.proxy.streams import SHUTTING_DOWN, OpenStreams
from gateway.proxy.upstream import Upstream
from gateway.quota.gate import QuotaGate
from gateway.quota.setup import QUOTA_GATE
from gateway.revocation import REVOCATIONS

log = logging.getLogger("gateway.proxy")

IDENTITY_FIELDS_KEPT = 10_000
"""Principals whose ``X-Gateway-*`` fields are kept (forgotten all at once past it; rebuilt on the next request)."""


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
    identity: UpstreamIdentity | None = None
    """Signs the identity JWT sent in ``identity_header`` (None: no JWT is sent)."""
    identity_header: str = DEFAULT_IDENTITY_HEADER
    public_scheme: str = field(init=False)
    public_host: str = field(init=False)
    public_origin: str = field(init=False)
    _identities: dict[str, tuple[Principal, tuple[tuple[str, str], ...]]] = field(init=False, repr=False)
    forwarded: frozenset[str] = field(init=False)
    """The lowercase names forwarded by name (``forwarded_names``), computed once."""

    def __post_init__(self) -> None:
        parts = urlsplit(self.public_url)
        object.__setattr__(self, "public_scheme", parts.scheme)
        object.__setattr__(self, "public_host", parts.netloc)
        object.__setattr__(self, "public_origin", f"{parts.scheme}://{parts.netloc}")
        object.__setattr__(self, "forwarded", forwarded_names(self.forward_headers))
        object.__setattr__(self, "_identities", {})

    def _identity_fields(self, principal: Principal) -> tuple[tuple[str, str], ...]:
        """``identity_fields`` of a principal, kept while the validation cache hands out the same one."""
        known = self._identities.get(principal.credential_id)
        if known is not None and known[0] is principal:
            return known[1]
        fields = identity_fields(principal)
        if len(self._identities) >= IDENTITY_FIELDS_KEPT:
            self._identities.clear()
        self._identities[principal.credential_id] = (principal, fields)
        return fields

    def origin_allowed(self, origin: str) -> bool:
        normalised = origin.strip().lower().rstrip("/")
        return normalised == self.public_origin or normalised in self.allowed_origins

    def check_origin(self, request: web.Request) -> None:
        """MCP transports: validate ``Origin`` when present, 403 when not allowed (DNS rebinding)."""
        origin = request.headers.get("Origin")
        if origin is not None and not self.origin_allowed(origin):
            raise OriginNotAllowed("Origin not allowed")

    async def upstream_headers(self, request: web.Request, principal: Principal) -> CIMultiDict[str]:
        identity = self.identity
        token = None if identity is None else identity.cached_token(principal) or await identity.token_for(principal)
        return upstream_request_headers(
            request.headers,
            peer=client_address(request, self.trusted_proxies),
            public_scheme=self.public_scheme,
            public_host=self.public_host,
            identity=self._identity_fields(principal) if self.identity_headers else (),
            forwarded=self.forwarded,
            identity_token=None if token is None else (self.identity_header, token),
        )


PROXY = web.AppKey("proxy", ProxyContext)


@contextlib.asynccontextmanager
async def _proxy_ctx(app: web.Application) -> AsyncIterator[None]:
    config, storage, clock, metrics, authn = app[CONFIG], app[STORAGE], app[CLOCK], app[METRICS], app[AUTHENTICATOR]
    streams = OpenStreams(authn, clock)
    app[REVOCATIONS].listen(streams.on_revocation)
    app[WATERMARK].listen(streams.on_watermark)
    identity = upstream_identity(config, app[IDENTITY].keys, clock)
    if identity is not None:
        app[REVOCATIONS].listen(identity.on_revocation)
        app[REVOCATIONS].listen_gaps(identity.forget_all)
    app[PROXY] = ProxyContext(
        authn=authn,
        sessions=SessionBindings(storage, clock),
        upstream=Upstream(
            app[UPSTREAM_POOLS],
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
        identity=identity,
        identity_header=config.upstream.identity_header or DEFAULT_IDENTITY_HEADER,
    )
    yield


def upstream_identity(config: GatewayConfig, keys: SigningKeys, clock: Clock) -> UpstreamIdentity | None:
    """The signer of ``upstream.identity_header`` (None: disabled, or no signing keys configured)."""
    if not config.upstream.identity_header:
        return None
    if not config.identity.encryption_keys:
        log.warning(
            "upstream.identity_header is set but identity.encryption_keys is not: the upstream gets no signed "
            "identity (set the keys, or upstream.identity_header: null to silence this)"
        )
        return None
    return UpstreamIdentity(
        keys,
        clock,
        issuer=config.issuer,
        audience=config.upstream.audience,
        default_scopes=config.oauth.default_scopes,
    )


async def _close_streams(app: web.Application) -> None:
    """On shutdown, before in-flight requests drain: end every stream with a final event (clients reconnect)."""
    app[PROXY].streams.close_all(SHUTTING_DOWN)


def setup_proxy(app: web.Application) -> None:
    """The MCP endpoints' shared context (``PROXY``), built after the credentials and the quota (the MCP routes
    are registered separately)."""
    app.cleanup_ctx.append(_proxy_ctx)
    app.on_shutdown.append(_close_streams)
    add_response_hook(app, close_after_unreadable_body)
