"""OAuth 2.0 error responses (RFC 6749 §5.2, RFC 7591 §3.2.2, RFC 8707 §2, RFC 6750 §3.1).

Each error code is a class; ``gateway.errors.error_middleware`` renders them all (JSON body,
``Cache-Control: no-store``). Descriptions are short and safe: never a token, code or stack trace.
"""

from __future__ import annotations

from gateway.errors import GatewayError, InvalidRequest, ServiceUnavailable

__all__ = [
    "AccessDenied",
    "InvalidClient",
    "InvalidClientMetadata",
    "InvalidGrant",
    "InvalidRedirectUri",
    "InvalidRequest",
    "InvalidScope",
    "InvalidTarget",
    "OAuthError",
    "ServiceUnavailable",
    "TooManyRequests",
    "UnauthorizedClient",
    "UnsupportedGrantType",
    "UnsupportedResponseType",
]


class OAuthError(GatewayError):
    status = 400
    error = "invalid_request"


class InvalidClient(OAuthError):
    """Client authentication failed (RFC 6749 §5.2): 401 when the client tried an authentication scheme."""

    status = 401
    error = "invalid_client"


class InvalidGrant(OAuthError):
    """The code or refresh token is invalid, expired, revoked, or was issued to another client (RFC 6749 §5.2)."""

    error = "invalid_grant"


class UnauthorizedClient(OAuthError):
    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"


class UnsupportedResponseType(OAuthError):
    error = "unsupported_response_type"


class InvalidScope(OAuthError):
    error = "invalid_scope"


class InvalidTarget(OAuthError):
    """The requested resource is not this gateway's MCP resource (RFC 8707 §2)."""

    error = "invalid_target"


class AccessDenied(OAuthError):
    status = 403
    error = "access_denied"


class InvalidRedirectUri(OAuthError):
    """RFC 7591 §3.2.2."""

    error = "invalid_redirect_uri"


class InvalidClientMetadata(OAuthError):
    """RFC 7591 §3.2.2."""

    error = "invalid_client_metadata"


class TooManyRequests(OAuthError):
    """429 with ``Retry-After`` (RFC 6585 §4) from an endpoint's rate limit.

    RFC 6749 §5.2 has no rate-limit code. ``temporarily_unavailable`` (RFC 6749 §4.1.2.1: "temporarily
    overloaded") tells a client to retry later and keep its tokens; ``invalid_grant``/``invalid_client`` would
    make clients discard credentials (logging people out), and ``slow_down`` (RFC 8628 §3.5) belongs to device
    flow polling, which clients of the code flow do not expect.
    """

    status = 429
    error = "temporarily_unavailable"

    def __init__(self, description: str, *, retry_after: int) -> None:
        super().__init__(description, headers={"Retry-After": str(max(1, retry_after))})
