"""Errors as classes, rendered in one place.

Handlers raise a ``GatewayError``; ``gateway.routes.error_middleware`` turns it (and anything else raised) into
the response, in the ``ErrorStyle`` the route declares in the route table: an HTML page on the pages people
see, JSON elsewhere. The client gets a short, safe description; detail for operators goes to the log, never
to the body. On the MCP data plane (``ErrorStyle.JSONRPC``) errors a client's JSON-RPC layer must understand
(upstream faults, unknown sessions, unparsable bodies, body limits) are JSON-RPC shaped; credential errors
are OAuth shaped (RFC 6750 §3) everywhere.

    GatewayError
     ├── InvalidRequest (400)           ── TwoCredentials, HeaderMismatch (JSON-RPC -32020), BadJsonRpc,
     │                                     InvalidJson (JSON-RPC -32700)
     ├── Unauthorized (401)             ── InvalidToken
     ├── Forbidden (403)                ── OriginNotAllowed, InsufficientScope
     ├── NotFound (404)
     ├── SessionNotFound (404, JSON-RPC)
     ├── HttpError (aiohttp's 404, 405, ...)
     ├── PayloadTooLarge (413, JSON-RPC on /mcp)
     ├── UpstreamError (502, JSON-RPC)  ── UpstreamAuthFailed, UpstreamRefused
     ├── ServiceUnavailable (503, Retry-After)
     └── UpstreamTimeout (504, JSON-RPC) ── UpstreamNoAnswer
"""

from __future__ import annotations

import enum
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# JSON-RPC error codes (JSON-RPC 2.0 §5.1 and MCP transports).
JSONRPC_PARSE_ERROR = -32700
JSONRPC_INTERNAL_ERROR = -32603
JSONRPC_INVALID_REQUEST = -32600
JSONRPC_SERVER_ERROR = -32000
JSONRPC_SESSION_NOT_FOUND = -32001
JSONRPC_HEADER_MISMATCH = -32020

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class ErrorStyle(enum.Enum):
    """How a route shows its errors (declared per route in ``gateway.routes``)."""

    JSON = "json"
    """``{"error", "error_description"}`` (RFC 6749 §5.2, RFC 6750 §3): the OAuth endpoints, admin API, health."""
    JSONRPC = "jsonrpc"
    """The MCP data plane: errors with a JSON-RPC code are JSON-RPC error objects, the rest as ``JSON``."""
    PAGE = "page"
    """An HTML error page (the OAuth sign-in and consent pages)."""
    ACCOUNT_PAGE = "account_page"
    """An HTML error page linking back to the account page (the dashboard)."""

    @property
    def is_page(self) -> bool:
        return self in (ErrorStyle.PAGE, ErrorStyle.ACCOUNT_PAGE)


class GatewayError(Exception):
    status: int = 500
    error: str = "server_error"
    jsonrpc_code: ClassVar[int | None] = None
    """On ``ErrorStyle.JSONRPC`` routes, the body is a JSON-RPC error object with this code."""

    def __init__(self, description: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.headers = dict(headers or {})

    def body(self, style: ErrorStyle = ErrorStyle.JSONRPC) -> dict[str, Any]:
        if self.jsonrpc_code is not None and style is ErrorStyle.JSONRPC:
            return {
                "jsonrpc": "2.0",
                "id": None,
                "error": {"code": self.jsonrpc_code, "message": self.description},
            }
        return {"error": self.error, "error_description": self.description}


class InvalidRequest(GatewayError):
    """The request is missing a parameter, repeats one, or is otherwise malformed (RFC 6750 §3.1)."""

    status = 400
    error = "invalid_request"


class TwoCredentials(InvalidRequest):
    """More than one credential in one request (RFC 6750 §2: one method per request)."""


class HeaderMismatch(InvalidRequest):
    """An ``Mcp-Method`` / ``Mcp-Name`` header disagrees with the JSON-RPC body (MCP 2026-07-28)."""

    jsonrpc_code = JSONRPC_HEADER_MISMATCH


class BadJsonRpc(InvalidRequest):
    jsonrpc_code = JSONRPC_INVALID_REQUEST


class InvalidJson(InvalidRequest):
    """A JSON body that does not parse (syntax, encoding, or nested deeper than ``gateway.jsonsafe`` allows)."""

    jsonrpc_code = JSONRPC_PARSE_ERROR


class BadForm(InvalidRequest):
    """A form post whose body is not a form the gateway reads (media type, charset, multipart framing)."""


class Unauthorized(GatewayError):
    """No usable credential was presented (RFC 6750 §3: no error code when none was sent)."""

    status = 401
    error = "unauthorized"


class InvalidToken(Unauthorized):
    """The credential is malformed, unknown, expired or revoked (RFC 6750 §3.1)."""

    error = "invalid_token"


class Forbidden(GatewayError):
    status = 403
    error = "forbidden"


class InsufficientScope(Forbidden):
    """The token lacks a scope the resource needs (RFC 6750 §3.1); the challenge names every one."""

    error = "insufficient_scope"


class OriginNotAllowed(Forbidden):
    """A browser ``Origin`` that is not allowed (MCP transports: DNS-rebinding protection)."""


class NotFound(GatewayError):
    """Absent, or not the caller's to see (the same answer, so ids of other accounts reveal nothing)."""

    status = 404
    error = "not_found"


class HttpError(GatewayError):
    """An ``aiohttp`` HTTP exception (no route: 404; wrong method: 405 with ``Allow``) in the gateway's shape."""

    def __init__(self, exc: web.HTTPException) -> None:
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Location")}
        super().__init__(exc.reason, headers=headers)
        self.status = exc.status
        self.error = exc.reason.lower().replace(" ", "_")


class SessionNotFound(GatewayError):
    """The MCP session is unknown or belongs to someone else; the client should start a new one."""

    status = 404
    error = "session_not_found"
    jsonrpc_code = JSONRPC_SESSION_NOT_FOUND


class PayloadTooLarge(GatewayError):
    status = 413
    error = "payload_too_large"
    jsonrpc_code = JSONRPC_INVALID_REQUEST


class UpstreamError(GatewayError):
    """The upstream MCP server refused the connection or failed; POSTs are never retried."""

    status = 502
    error = "bad_gateway"
    jsonrpc_code = JSONRPC_SERVER_ERROR


class UpstreamAuthFailed(UpstreamError):
    """The upstream answered 401/403: its problem, not the client's token, so never passed on as 401."""


class UpstreamRefused(UpstreamError):
    """No connection to the upstream (refused, reset, unresolvable): nothing reached it (the quota refunds)."""


class UpstreamTimeout(GatewayError):
    status = 504
    error = "gateway_timeout"
    jsonrpc_code = JSONRPC_SERVER_ERROR


class UpstreamNoAnswer(UpstreamTimeout):
    """No response headers within ``first_byte_timeout`` (the quota refunds)."""


class ServiceUnavailable(GatewayError):
    """A dependency (the database) is down: 503 with ``Retry-After``, never a 401."""

    status = 503
    error = "temporarily_unavailable"

    def __init__(self, description: str, *, retry_after: int = 5) -> None:
        super().__init__(description, headers={"Retry-After": str(retry_after)})


def render(exc: GatewayError, style: ErrorStyle = ErrorStyle.JSONRPC) -> web.Response:
    """The JSON body of ``exc`` (the HTML page of the page styles is ``gateway.web_pages.error_response``)."""
    headers = {**NO_STORE, **exc.headers}
    return web.Response(
        status=exc.status,
        body=json.dumps(exc.body(style)).encode(),
        content_type="application/json",
        headers=headers,
    )


def from_http_exception(exc: web.HTTPException) -> GatewayError:
    if exc.status == 413:
        return PayloadTooLarge("Request body too large")
    return HttpError(exc)
