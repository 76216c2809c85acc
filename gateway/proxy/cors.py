"""CORS for browser MCP clients on the MCP endpoints.

Only origins that pass the ``Origin`` check (``public_url``'s and ``security.allowed_origins``) get CORS
headers, without credentials: ``/mcp`` reads no cookies. The headers a browser client must read are
exposed, above all ``WWW-Authenticate`` (which leads it to discovery) and ``Mcp-Session-Id``.
"""

from __future__ import annotations

from aiohttp import web

from gateway.errors import ErrorStyle, Handler
from gateway.proxy.context import PROXY
from gateway.routing import route_of

EXPOSED = "WWW-Authenticate, Mcp-Session-Id, MCP-Protocol-Version, Retry-After, RateLimit, RateLimit-Policy"
ALLOWED_HEADERS = (
    "Authorization, X-API-Key, Content-Type, Accept, Mcp-Session-Id, MCP-Protocol-Version, Last-Event-ID, "
    "Mcp-Method, Mcp-Name"
)


def _allowed_origin(request: web.Request) -> str | None:
    """The request's ``Origin`` when it is an MCP route's and passes the ``Origin`` check (else None)."""
    origin = request.headers.get("Origin")
    if origin is None or route_of(request).errors is not ErrorStyle.JSONRPC:  # the route table's MCP data plane
        return None
    return origin if request.app[PROXY].origin_allowed(origin) else None


def preflight(*served: str) -> Handler:
    """The ``OPTIONS`` handler of an MCP route serving ``served``: a CORS preflight from an allowed origin gets
    204 with what it may send; anything else is refused like any method the route does not serve (405)."""

    async def answer(request: web.Request) -> web.StreamResponse:
        origin = _allowed_origin(request)
        if origin is None or "Access-Control-Request-Method" not in request.headers:
            raise web.HTTPMethodNotAllowed("OPTIONS", served)
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": ", ".join((*served, "OPTIONS")),
                # Mcp-Param-* names are open-ended (MCP 2026-07-28), so echo what the browser asks for.
                "Access-Control-Allow-Headers": request.headers.get("Access-Control-Request-Headers", ALLOWED_HEADERS),
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            },
        )

    return answer


def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """A response hook: also covers errors and streams, whose headers are sent before the body."""
    if "Origin" not in request.headers or "Access-Control-Allow-Origin" in response.headers:  # or a preflight's
        return
    origin = _allowed_origin(request)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSED
        response.headers.add("Vary", "Origin")
