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
CORS_ORIGIN = web.RequestKey("cors_origin", str)


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    origin = request.headers.get("Origin")
    mcp = route_of(request).errors is ErrorStyle.JSONRPC  # the route table's MCP data plane
    if origin is None or not mcp or not request.app[PROXY].origin_allowed(origin):
        return await handler(request)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
                # Mcp-Param-* names are open-ended (MCP 2026-07-28), so echo what the browser asks for.
                "Access-Control-Allow-Headers": request.headers.get("Access-Control-Request-Headers", ALLOWED_HEADERS),
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            },
        )
    request[CORS_ORIGIN] = origin
    return await handler(request)


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: also covers errors and streams, whose headers are sent before the body."""
    origin = request.get(CORS_ORIGIN)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSED
        response.headers.add("Vary", "Origin")
