"""Which credential a request carries: one per request (RFC 6750 §2), in ``X-API-Key`` or ``Authorization: Bearer``,
never in the query string or a cookie. Header parsing only: no storage is consulted here."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from aiohttp import web

from gateway.errors import TwoCredentials, Unauthorized
from gateway.secrets_hashing import secret_hash

API_KEY_HEADER = "X-API-Key"
AUTHORIZATION = "Authorization"
_BEARER = re.compile(r"^Bearer +([A-Za-z0-9\-._~+/]+=*) *$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Challenge:
    """Builds ``WWW-Authenticate`` for 401 and 403 answers (RFC 6750 §3, RFC 9728 §5.1)."""

    resource_metadata: str | None = None
    scope: str | None = None

    def headers(self, error: str | None = None, description: str | None = None) -> dict[str, str]:
        params = ['realm="mcp-gateway"']
        if self.resource_metadata:
            params.append(f'resource_metadata="{self.resource_metadata}"')
        if self.scope:
            params.append(f'scope="{self.scope}"')
        if error:
            params.append(f'error="{error}"')
        if description:
            params.append(f'error_description="{description}"')
        return {"WWW-Authenticate": "Bearer " + ", ".join(params)}


@dataclass(frozen=True, slots=True)
class Presented:
    """The credential a request carries and the header that carried it."""

    raw: str = field(repr=False)
    header: str
    """``X-API-Key`` or ``Authorization``."""
    digest: str = field(init=False, repr=False, compare=False)
    """What the caches and the storage key it by (the secret itself is never stored); hashed once."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", secret_hash(self.raw))


def extract_credential(request: web.Request, challenge: Challenge) -> Presented:
    """The one credential the request carries; raises when there is none, two, or a wrong scheme."""
    headers = request.headers
    api_key, authorization = headers.get(API_KEY_HEADER), headers.get(AUTHORIZATION)
    # A field repeated shows as more items than distinct names (checked first: one comparison, no lists).
    repeated = len(headers) != len(headers.keys()) and (
        len(headers.getall(API_KEY_HEADER, ())) > 1 or len(headers.getall(AUTHORIZATION, ())) > 1
    )
    if repeated or (api_key is not None and authorization is not None):
        raise TwoCredentials(
            "Send exactly one credential per request: an X-API-Key header or an Authorization header, not both",
            headers=challenge.headers("invalid_request"),
        )
    if api_key is not None:
        value = api_key.strip()
        if not value:
            raise Unauthorized("An API key or access token is required", headers=challenge.headers())
        return Presented(value, API_KEY_HEADER)
    if authorization is None:
        raise Unauthorized("An API key or access token is required", headers=challenge.headers())
    match = _BEARER.match(authorization)
    if match is None:
        raise Unauthorized("Use the Bearer authentication scheme", headers=challenge.headers())
    return Presented(match.group(1), AUTHORIZATION)
