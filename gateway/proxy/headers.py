"""Which headers cross the gateway, in each direction.

To the upstream: never the client's credentials (``Authorization``, ``X-API-Key``, cookies: no token
passthrough), never hop-by-hop headers, never the client's copies of the identity or forwarding
headers the gateway itself sets. From the upstream: never hop-by-hop headers, never cookies, never a
challenge (``WWW-Authenticate``) that would push clients into re-authentication.
"""

from __future__ import annotations

from collections.abc import Mapping

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.authn import Principal
from gateway.text_safety import has_unsafe_characters

IDENTITY_PREFIX = "x-gateway-"

# RFC 9110 §7.6.1 hop-by-hop fields, plus the legacy ones proxies strip.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

_NEVER_UPSTREAM = HOP_BY_HOP | {
    "host",
    "content-length",
    "authorization",
    "x-api-key",
    "cookie",
    "origin",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-real-ip",
}

_NEVER_DOWNSTREAM = HOP_BY_HOP | {
    "set-cookie",
    "www-authenticate",
    "content-length",
    "server",
    "date",
}


def _connection_listed(headers: Mapping[str, str]) -> set[str]:
    """Fields named in ``Connection`` are hop-by-hop too (RFC 9110 §7.6.1)."""
    listed: set[str] = set()
    for value in headers.getall("Connection", []) if isinstance(headers, CIMultiDictProxy) else []:
        listed.update(part.strip().lower() for part in value.split(","))
    return listed


def upstream_request_headers(
    incoming: CIMultiDictProxy[str],
    principal: Principal,
    *,
    peer: str | None,
    public_scheme: str,
    public_host: str,
    identity: bool,
) -> CIMultiDict[str]:
    drop = _NEVER_UPSTREAM | _connection_listed(incoming)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        lower = name.lower()
        if lower in drop or lower.startswith(IDENTITY_PREFIX):
            continue
        out.add(name, value)
    if identity:
        out["X-Gateway-User-Id"] = principal.user_id
        if not has_unsafe_characters(principal.email):  # a row stored before addresses were checked
            out["X-Gateway-User-Email"] = principal.email
        out["X-Gateway-Auth-Method"] = principal.method
        out["X-Gateway-Credential-Id"] = principal.credential_id
        if principal.client_id is not None:
            out["X-Gateway-Client-Id"] = principal.client_id
    if peer:
        out["X-Forwarded-For"] = peer
    out["X-Forwarded-Proto"] = public_scheme
    out["X-Forwarded-Host"] = public_host
    return out


def downstream_response_headers(upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    drop = _NEVER_DOWNSTREAM | _connection_listed(upstream)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream.items():
        if name.lower() not in drop:
            out.add(name, value)
    return out
