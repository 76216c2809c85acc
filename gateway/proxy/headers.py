"""Which headers cross the gateway, in each direction.

To the upstream, an allow-list: the MCP headers (``Mcp-Session-Id``, ``MCP-Protocol-Version``, ``Mcp-Method``,
``Mcp-Name``, ``Mcp-Param-*``, ``Last-Event-ID``), ``Accept``, ``Content-Type``, ``User-Agent``, W3C trace
context, and the names in ``upstream.forward_headers``; then the gateway's own identity and forwarding headers:
the signed identity JWT in ``upstream.identity_header`` (which no client value of that name ever reaches: it is
not on the allow-list, may not be added to it, and is overwritten) and the unsigned ``X-Gateway-*`` ones.
Nothing else: no credentials, no cookies, no routing headers (``X-Original-URL``, ``Forwarded``, ...), no
``Content-Encoding`` (the gateway forwards the bytes it decoded, parsed and charged), and no name with an
underscore, which CGI-style stacks merge with the hyphenated one (``X_Gateway_User_Id``).

From the upstream: never hop-by-hop headers, cookies or a challenge (``WWW-Authenticate``) that would push
clients into re-authentication, and never a header that acts on the gateway's origin (HSTS, ``Clear-Site-Data``,
CORS, ``Alt-Svc``, CSP, ...) or on a front proxy (``X-Accel-*``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.errors import BadJsonRpc
from gateway.text_safety import has_unsafe_characters

if TYPE_CHECKING:  # config validation imports this module: keep it light
    from gateway.credentials import Principal

IDENTITY_PREFIX = "x-gateway-"
DEFAULT_IDENTITY_HEADER = "X-MCP-Identity"
"""``upstream.identity_header``'s default: the signed identity JWT (``gateway/identity/upstream.py``)."""
MCP_PARAM_PREFIX = "mcp-param-"

FORWARDED_TO_UPSTREAM = frozenset(
    {
        "accept",
        "content-type",
        "user-agent",
        "mcp-protocol-version",
        "mcp-session-id",
        "mcp-method",
        "mcp-name",
        "last-event-id",
        "traceparent",
        "tracestate",
    }
)

# RFC 9110 §7.6.1: hop-by-hop fields, meaningful for one connection only.
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

# Fields whose meaning is the gateway's or the connection's: never forwarded, whatever the configuration says.
NEVER_FORWARDABLE = HOP_BY_HOP | frozenset(
    {
        "host",
        "content-length",
        "content-encoding",
        "authorization",
        "x-api-key",
        "cookie",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
    }
)

SINGLE_VALUED = ("Mcp-Session-Id", "Mcp-Method", "Mcp-Name", "MCP-Protocol-Version", "Last-Event-ID", "Content-Type")
"""Request fields the gateway checks or the upstream acts on by one value: a repeat is refused (400)."""

# Hop-by-hop fields, and fields that act on the gateway's origin or on a front proxy.
_NEVER_DOWNSTREAM = HOP_BY_HOP | frozenset(
    {
        "set-cookie",
        "set-cookie2",
        "www-authenticate",
        "content-length",
        "server",
        "date",
        "location",
        "refresh",
        "strict-transport-security",
        "clear-site-data",
        "alt-svc",
        "content-security-policy",
        "content-security-policy-report-only",
        "permissions-policy",
        "feature-policy",
        "service-worker-allowed",
        "origin-agent-cluster",
        "nel",
        "report-to",
        "reporting-endpoints",
        "public-key-pins",
        "expect-ct",
        "x-sendfile",
    }
)
_NEVER_DOWNSTREAM_PREFIXES = ("access-control-", "cross-origin-", "x-accel-")


class RepeatedHeader(BadJsonRpc):
    """A field the gateway authorizes on or checks came more than once (400, JSON-RPC -32600)."""


def refuse_repeats(incoming: CIMultiDictProxy[str]) -> None:
    """400 when a single-valued MCP field (or one ``Mcp-Param-*`` name) is sent twice: the gateway would check
    the first value while the upstream might act on another."""
    if len(incoming.keys()) == len(incoming):  # no field repeated at all (the keys are unique, case-insensitively)
        return
    for name in SINGLE_VALUED:
        if len(incoming.getall(name, ())) > 1:
            raise RepeatedHeader(f"{name} header repeated")
    params = [name.lower() for name, _ in incoming.items() if name.lower().startswith(MCP_PARAM_PREFIX)]
    if len(params) != len(set(params)):
        raise RepeatedHeader("Mcp-Param header repeated")


def forwardable_problem(name: str) -> str | None:
    """Why ``name`` may not be listed in ``upstream.forward_headers`` (None: it may)."""
    lower = name.lower()
    if not name or not all(c.isalnum() or c == "-" for c in name) or not name.isascii():
        return "letters, digits and '-' only"
    if lower in NEVER_FORWARDABLE or lower.startswith(IDENTITY_PREFIX):
        return "credential, connection, encoding, identity or forwarding header"
    return None


def identity_header_problems(
    header: str | None, audience: str | None, *, forward_headers: Iterable[str], app_audience: str
) -> list[str]:
    """What is wrong with ``upstream.identity_header`` and ``upstream.identity_audience``."""
    problems: list[str] = []
    if header:
        if forwardable_problem(header) is not None or header.lower() in FORWARDED_TO_UPSTREAM:
            problems.append(
                "upstream.identity_header: letters, digits and '-', not an MCP, credential or X-Gateway-* header"
            )
        if header.lower() in {name.lower() for name in forward_headers}:
            problems.append(
                "upstream.identity_header: must not be listed in upstream.forward_headers (clients could set it)"
            )
    if audience is not None:
        if not audience or len(audience) > 200 or not all("\x21" <= c <= "\x7e" for c in audience):
            problems.append("upstream.identity_audience: 1-200 printable characters, no spaces")
        elif audience == app_audience:
            problems.append(
                "upstream.identity_audience: must differ from identity.audience (an app's identity token must not "
                "pass for the gateway's word to the upstream)"
            )
    return problems


def _connection_listed(headers: CIMultiDictProxy[str]) -> set[str]:
    """Fields named in ``Connection`` are hop-by-hop too (RFC 9110 §7.6.1)."""
    listed: set[str] = set()
    for value in headers.getall("Connection", ()):
        listed.update(part.strip().lower() for part in value.split(","))
    return listed


def forwarded_names(forward: Iterable[str] = ()) -> frozenset[str]:
    """The lowercase names forwarded to the upstream by name: the MCP allow-list and ``upstream.forward_headers``
    (whose names the configuration already checked), never a credential, connection or forwarding field, nor a
    name with an underscore. ``Mcp-Param-*`` names are matched by prefix in ``upstream_request_headers``."""
    names = FORWARDED_TO_UPSTREAM | {name.lower() for name in forward}
    return frozenset(name for name in names if "_" not in name and name not in NEVER_FORWARDABLE)


def identity_fields(principal: Principal) -> tuple[tuple[str, str], ...]:
    """The unsigned ``X-Gateway-*`` fields telling the upstream who calls (``upstream.identity_headers``)."""
    fields = [("X-Gateway-User-Id", principal.user_id)]
    if not has_unsafe_characters(principal.email):  # a row stored before addresses were checked
        fields.append(("X-Gateway-User-Email", principal.email))
    fields += [("X-Gateway-Auth-Method", principal.method), ("X-Gateway-Credential-Id", principal.credential_id)]
    if principal.client_id is not None:
        fields.append(("X-Gateway-Client-Id", principal.client_id))
    if principal.scope is not None:  # the credential's scopes, so tools can check them too (gateway.policy)
        fields.append(("X-Gateway-Scope", principal.scope))
    return tuple(fields)


def upstream_request_headers(
    incoming: CIMultiDictProxy[str],
    *,
    peer: str | None,
    public_scheme: str,
    public_host: str,
    identity: Iterable[tuple[str, str]] = (),
    forwarded: frozenset[str] = FORWARDED_TO_UPSTREAM,
    identity_token: tuple[str, str] | None = None,
) -> CIMultiDict[str]:
    """``identity``: ``identity_fields(principal)`` (or none); ``forwarded``: ``forwarded_names(...)``;
    ``identity_token``: ``(header name, signed JWT)``.

    The gateway's own fields are added after the client's: none of their names can be among the client's, as
    no name on the allow-list or in ``upstream.forward_headers`` is a credential, ``X-Gateway-*``, forwarding or
    identity-token field (the configuration's checks), so no client value of those names ever survives."""
    hop = _connection_listed(incoming) if "Connection" in incoming else ()
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        lower = name.lower()
        if (lower in forwarded or (lower.startswith(MCP_PARAM_PREFIX) and "_" not in lower)) and lower not in hop:
            out.add(name, value)
    out.extend(identity)
    if identity_token is not None:
        out.add(*identity_token)
    if peer:
        out.add("X-Forwarded-For", peer)
    out.add("X-Forwarded-Proto", public_scheme)
    out.add("X-Forwarded-Host", public_host)
    return out


def downstream_response_headers(upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    listed = _connection_listed(upstream) if "Connection" in upstream else ()
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream.items():
        lower = name.lower()
        if lower in _NEVER_DOWNSTREAM or "_" in lower or lower.startswith(_NEVER_DOWNSTREAM_PREFIXES):
            continue
        if lower not in listed:
            out.add(name, value)
    return out
