"""The example upstream MCP server: its tools, resources and prompts, and the ASGI app serving them.

One Starlette app serves every transport the ``mcp`` SDK offers:

* ``/mcp``: Streamable HTTP, both the session-based handshake revisions (``initialize``, then
  ``Mcp-Session-Id`` on every request, a GET stream, DELETE to end) and the stateless
  2026-07-28 requests (no ``initialize``; ``MCP-Protocol-Version``/``Mcp-Method`` headers on
  each self-contained POST). The SDK's session manager picks the path per request from the
  ``MCP-Protocol-Version`` header.
* ``/sse`` with messages POSTed to ``/messages/?session_id=...``: the legacy HTTP+SSE transport.

The server has no notion of auth; ``whoami`` only reports what the caller's HTTP request carried, and, given
an ``IdentityVerifier`` (``--identity-jwks``), whether the gateway's signed identity JWT in it verifies.
"""

from __future__ import annotations

import ipaddress
import json
import string
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from upstream_mcp.identity import IdentityRejected, IdentityVerifier, token_key_id

SERVER_NAME = "upstream-mcp"
SERVER_VERSION = "0.1.0"

READY_LINE_PREFIX = "upstream_mcp listening on "
"""Start of the one stdout line ``python -m upstream_mcp`` prints once it accepts connections."""

MCP_PATH = "/mcp"
SSE_PATH = "/sse"
MESSAGES_PATH = "/messages/"

MAX_STEPS = 1000
MAX_DELAY_SECONDS = 60.0
MAX_KIB = 16384

BIG_TEXT_LINE_LENGTH = 64
"""Every ``big_text`` line is this many characters, newline included; 16 lines make one KiB."""

IDENTITY_HEADER_PREFIX = "x-gateway-"
IDENTITY_TOKEN_HEADER = "x-mcp-identity"  # noqa: S105 - a header name
"""Where the gateway sends its signed identity JWT (its ``upstream.identity_header``)."""

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
_FILLER = string.ascii_letters + string.digits


class WhoAmI(BaseModel):
    """What ``whoami`` saw on the HTTP request that carried the call."""

    identity: dict[str, str]
    """Every ``x-gateway-*`` request header, lowercase name to value."""

    header_names: list[str]
    """Sorted lowercase names of all the request's headers; values are never echoed."""

    identity_token: IdentityTokenReport | None = None
    """The identity JWT's verification (None: the request carried none)."""


class IdentityTokenReport(BaseModel):
    """What became of the identity JWT: its verified claims, or why it was not verified."""

    verified: bool
    key_id: str | None = None
    """The ``kid`` of the key that signed it (when verified)."""
    claims: dict[str, object] | None = None
    error: str | None = None


def echo(text: str) -> str:
    """Return ``text`` unchanged."""
    return text


def add(a: float, b: float) -> float:
    """Return ``a + b``."""
    return a + b


async def slow_count(steps: int, delay: float, ctx: Context) -> str:
    """Count to ``steps``, sending a progress notification every ``delay`` seconds.

    Notifications only reach a client that asked for progress (a ``progressToken``).
    """
    if not 0 <= steps <= MAX_STEPS:
        raise ToolError(f"steps must be between 0 and {MAX_STEPS}, got {steps}")
    if not 0 <= delay <= MAX_DELAY_SECONDS:
        raise ToolError(f"delay must be between 0 and {MAX_DELAY_SECONDS:g} seconds, got {delay:g}")
    for step in range(1, steps + 1):
        await anyio.sleep(delay)
        await ctx.report_progress(step, steps, f"step {step} of {steps}")
    return f"counted to {steps}"


def big_text_line(number: int) -> str:
    """Line ``number`` (from 0) of ``big_text``: an 8-digit line number, a space, filler and a newline."""
    offset = number % len(_FILLER)
    width = BIG_TEXT_LINE_LENGTH - 10
    filler = (_FILLER * 2)[offset : offset + width]
    return f"{number:08d} {filler}\n"


def big_text(kib: int) -> str:
    """Return exactly ``kib`` KiB of deterministic ASCII: numbered 64-character lines (see ``big_text_line``)."""
    if not 0 <= kib <= MAX_KIB:
        raise ToolError(f"kib must be between 0 and {MAX_KIB}, got {kib}")
    lines_per_kib = 1024 // BIG_TEXT_LINE_LENGTH
    return "".join(big_text_line(number) for number in range(kib * lines_per_kib))


def make_whoami(
    verifier: IdentityVerifier | None = None, token_header: str = IDENTITY_TOKEN_HEADER
) -> Callable[[Context], Awaitable[WhoAmI]]:
    """The ``whoami`` tool, verifying the identity JWT in ``token_header`` with ``verifier`` (None: not verified)."""
    token_header = token_header.lower()

    async def whoami(ctx: Context) -> WhoAmI:
        """Report the ``x-gateway-*`` headers (with values), the names of all headers of this call's HTTP request,
        and the verified claims of the gateway's identity JWT (or why it did not verify).

        On the legacy SSE transport that is the POST to ``/messages/`` that carried the call.
        """
        headers = ctx.headers
        if headers is None:
            raise ToolError("whoami needs an HTTP transport: this request carried no HTTP headers")
        identity: dict[str, str] = {}
        names: set[str] = set()
        tokens: list[str] = []
        for raw_name, value in headers.items():
            name = raw_name.lower()
            names.add(name)
            if name.startswith(IDENTITY_HEADER_PREFIX):
                identity[name] = f"{identity[name]}, {value}" if name in identity else value
            elif name == token_header:
                tokens.append(value)
        report = await _verify(verifier, tokens) if tokens else None
        return WhoAmI(identity=identity, header_names=sorted(names), identity_token=report)

    return whoami


async def _verify(verifier: IdentityVerifier | None, tokens: list[str]) -> IdentityTokenReport:
    if len(tokens) > 1:
        return IdentityTokenReport(verified=False, error="the identity header came more than once")
    if verifier is None:
        return IdentityTokenReport(verified=False, error="not verified: the server has no --identity-jwks")
    try:
        claims = await verifier.verify(tokens[0])
    except IdentityRejected as exc:
        return IdentityTokenReport(verified=False, error=str(exc))
    return IdentityTokenReport(verified=True, key_id=token_key_id(tokens[0]), claims=claims)


def server_info() -> str:
    """Describe this server and where its transports live."""
    return json.dumps(
        {
            "name": SERVER_NAME,
            "version": SERVER_VERSION,
            "transports": {"streamable-http": MCP_PATH, "sse": SSE_PATH, "sse-messages": MESSAGES_PATH},
        }
    )


def greeting(name: str) -> str:
    """Greet ``name``."""
    return f"Hello, {name}!"


def summarize(text: str) -> str:
    """Ask the model for a one-paragraph summary of ``text``."""
    return f"Summarize the following text in one paragraph:\n\n{text}"


def create_server(identity: IdentityVerifier | None = None, identity_header: str = IDENTITY_TOKEN_HEADER) -> MCPServer:
    """Build a fresh ``MCPServer`` with the example tools, resources and prompt registered; ``whoami`` verifies
    the identity JWT in ``identity_header`` with ``identity``."""
    server: MCPServer = MCPServer(
        SERVER_NAME,
        version=SERVER_VERSION,
        instructions="An example MCP server behind the auth gateway. It performs no authentication.",
    )
    server.add_tool(echo)
    server.add_tool(add)
    server.add_tool(slow_count)
    server.add_tool(big_text, structured_output=False)
    server.add_tool(make_whoami(identity, identity_header))
    server.resource("info://server", name="server-info", mime_type="application/json")(server_info)
    server.resource("greeting://{name}", name="greeting", mime_type="text/plain")(greeting)
    server.prompt()(summarize)
    return server


def _is_wildcard(host: str) -> bool:
    """Whether binding ``host`` means every interface, which names no host a request could use."""
    if not host:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def _host_patterns(host: str) -> list[str]:
    """``host`` as given, plus ``host:*`` (any port) when it names no port itself (IPv6 in brackets)."""
    has_port = "]:" in host if host.startswith("[") else host.count(":") == 1
    return [host] if has_port else [host, f"{host}:*"]


def transport_security(
    bind_host: str = "127.0.0.1",
    allowed_hosts: Iterable[str] = (),
    allowed_origins: Iterable[str] = (),
    *,
    enabled: bool = True,
) -> TransportSecuritySettings:
    """DNS-rebinding protection settings for the app: which ``Host`` and ``Origin`` values are accepted.

    Always accepted: the loopback names and the bound host, each with or without a port, so a
    reverse proxy that sets ``Host`` to this server's ``host:port`` gets through. ``allowed_hosts``
    entries without a port match any port. Requests without an ``Origin`` header always pass the
    origin check; ``allowed_origins`` are full origins such as ``https://app.example`` (a trailing
    ``:*`` matches any port). ``enabled=False`` turns the Host/Origin checks off entirely.
    """
    if not enabled:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    bound = f"[{bind_host}]" if ":" in bind_host and not bind_host.startswith("[") else bind_host
    hosts: list[str] = []
    for host in (*LOOPBACK_HOSTS, *([] if _is_wildcard(bound) else [bound]), *allowed_hosts):
        hosts.extend(pattern for pattern in _host_patterns(host) if pattern not in hosts)
    origins = [f"http://{host}{suffix}" for host in LOOPBACK_HOSTS for suffix in ("", ":*")]
    origins.extend(origin for origin in allowed_origins if origin not in origins)
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


class HostOriginGuard:
    """ASGI middleware answering a foreign ``Host`` (421) or ``Origin`` (403) before any transport runs.

    The SDK's transports make the same check, but its legacy ``/sse`` endpoint raises after sending
    the rejection, which logs a traceback and drops the keep-alive connection; checking here first
    keeps every rejection a plain response.
    """

    def __init__(self, app: ASGIApp, security: TransportSecuritySettings) -> None:
        self.app = app
        self.security = TransportSecurityMiddleware(security)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            rejection = await self.security.validate_request(Request(scope, receive))
            if rejection is not None:
                await rejection(scope, receive, send)
                return
        await self.app(scope, receive, send)


class CompleteResponses:
    """ASGI middleware keeping every response well formed when the SDK's stream endpoints end abruptly.

    On shutdown the SDK's event streams end in ways uvicorn reports as errors: the legacy ``/sse``
    endpoint sends a second response (an empty ``Response()``) after its stream, and the Streamable
    HTTP GET stream returns without finishing its body. A second response start is dropped (its
    final empty body then ends the first), and a body left open when the app returns is finished.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = complete = False

        async def send_once(message: Message) -> None:
            nonlocal started, complete
            if complete or (message["type"] == "http.response.start" and started):
                return
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True
            await send(message)

        await self.app(scope, receive, send_once)
        if started and not complete:
            await send_once({"type": "http.response.body", "body": b"", "more_body": False})


def build_app(
    server: MCPServer | None = None,
    *,
    security: TransportSecuritySettings | None = None,
    debug: bool = False,
) -> Starlette:
    """The ASGI app serving ``server`` over Streamable HTTP at ``/mcp`` and legacy SSE at ``/sse``.

    The app's lifespan runs the Streamable HTTP session manager, so serve it with lifespan
    enabled (uvicorn's default). Each app needs its own ``server``: a session manager runs once.
    """
    server = server if server is not None else create_server()
    security = security if security is not None else transport_security()
    streamable = server.streamable_http_app(streamable_http_path=MCP_PATH, transport_security=security)
    legacy = server.sse_app(sse_path=SSE_PATH, message_path=MESSAGES_PATH, transport_security=security)
    session_manager = server.session_manager

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with session_manager.run():
            yield

    return Starlette(
        debug=debug,
        routes=[*streamable.routes, *legacy.routes],
        middleware=[Middleware(CompleteResponses), Middleware(HostOriginGuard, security=security)],
        lifespan=lifespan,
    )
