"""Errors as classes, rendered in one place.

Handlers raise a ``GatewayError``; ``error_middleware`` turns it into the response. The client gets a
short, safe description; detail for operators goes to the log, never to the body. Errors on the MCP
data plane that a client's JSON-RPC layer must understand (upstream faults, unknown sessions, body
limits on ``/mcp``) are JSON-RPC shaped; credential errors are OAuth shaped (RFC 6750 §3).

    GatewayError
     ├── InvalidRequest (400)           ── TwoCredentials, HeaderMismatch (JSON-RPC -32020)
     ├── Unauthorized (401)             ── InvalidToken
     ├── Forbidden (403)                ── OriginNotAllowed, InsufficientScope
     ├── NotFound (404)
     ├── SessionNotFound (404, JSON-RPC)
     ├── PayloadTooLarge (413, JSON-RPC on /mcp)
     ├── UpstreamError (502, JSON-RPC)  ── UpstreamAuthFailed, UpstreamRefused
     ├── ServiceUnavailable (503, Retry-After)
     └── UpstreamTimeout (504, JSON-RPC) ── UpstreamNoAnswer
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

from aiohttp import web

log = logging.getLogger("gateway.errors")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# JSON-RPC error codes (JSON-RPC 2.0 §5.1 and MCP transports).
JSONRPC_INTERNAL_ERROR = -32603
JSONRPC_INVALID_REQUEST = -32600
JSONRPC_SERVER_ERROR = -32000
JSONRPC_SESSION_NOT_FOUND = -32001
JSONRPC_HEADER_MISMATCH = -32020

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class GatewayError(Exception):
    status: ClassVar[int] = 500
    error: ClassVar[str] = "server_error"
    jsonrpc_code: ClassVar[int | None] = None
    """When set, the body is a JSON-RPC error object instead of an OAuth-style error."""

    def __init__(self, description: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        if self.jsonrpc_code is not None:
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


def render(exc: GatewayError) -> web.Response:
    headers = {**NO_STORE, **exc.headers}
    return web.Response(
        status=exc.status,
        body=json.dumps(exc.body()).encode(),
        content_type="application/json",
        headers=headers,
    )


def _from_http_exception(exc: web.HTTPException) -> web.StreamResponse:
    if exc.status == 413:
        return render(PayloadTooLarge("Request body too large"))
    body = {"error": exc.reason.lower().replace(" ", "_"), "error_description": exc.reason}
    headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Location")}
    return web.json_response(body, status=exc.status, headers={**NO_STORE, **headers})


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place that turns exceptions into responses."""
    try:
        return await handler(request)
    except GatewayError as exc:
        if exc.status >= 500:
            log.warning("%s %s -> %d %s", request.method, request.path, exc.status, exc.description)
        return render(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http_exception(exc)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return render(GatewayError("Internal error"))
