"""What the proxy handlers share: their collaborators and the checks every MCP request passes."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web
from multidict import CIMultiDict

from gateway.authn import Authenticator, Principal
from gateway.errors import OriginNotAllowed
from gateway.net import client_address
from gateway.proxy.headers import upstream_request_headers
from gateway.proxy.sessions import SessionBindings
from gateway.proxy.streams import OpenStreams
from gateway.proxy.upstream import Upstream
from gateway.quota.gate import QuotaGate


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
