"""Command line: ``python -m upstream_mcp --host 127.0.0.1 --port 0``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Iterator, Sequence

import uvicorn

from upstream_mcp.identity import IdentityVerifier
from upstream_mcp.server import (
    IDENTITY_TOKEN_HEADER,
    MCP_PATH,
    MESSAGES_PATH,
    READY_LINE_PREFIX,
    SSE_PATH,
    build_app,
    create_server,
    transport_security,
)

logger = logging.getLogger("upstream_mcp")

_EXIT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m upstream_mcp",
        description=(
            f"Example MCP server without auth. Streamable HTTP at {MCP_PATH} (session-based 2025 "
            f"revisions and stateless 2026-07-28 requests), legacy HTTP+SSE at {SSE_PATH} "
            f"(messages at {MESSAGES_PATH}). Once it accepts connections it prints one line, "
            f"'{READY_LINE_PREFIX}http://HOST:PORT', to stdout; everything else goes to stderr."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8000, help="port to bind; 0 picks a free one (default: %(default)s)"
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help=(
            "extra Host header value to accept (repeatable), e.g. the name a reverse proxy or "
            "container network uses for this server; without a port any port matches. The "
            "loopback names and the bound address are always accepted, with any port."
        ),
    )
    parser.add_argument(
        "--allowed-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help=(
            "extra Origin header value to accept (repeatable), e.g. https://app.example; a trailing "
            "':*' matches any port. Requests without Origin and from http://localhost-style origins "
            "always pass."
        ),
    )
    parser.add_argument(
        "--no-dns-rebinding-protection",
        dest="dns_rebinding_protection",
        action="store_false",
        help="accept any Host and Origin header (the protection is on by default)",
    )
    parser.add_argument(
        "--identity-jwks",
        metavar="URL",
        help=(
            "the gateway's key set (https://GATEWAY/.well-known/jwks.json): whoami then verifies the signed "
            "identity JWT the gateway sends and reports its claims (without it: reported as not verified)"
        ),
    )
    parser.add_argument(
        "--identity-audience",
        metavar="AUD",
        help="the aud the identity JWT must carry: the gateway's upstream.identity_audience (default: this "
        "server's origin, http://HOST:PORT as the gateway reaches it, which is the gateway's default too)",
    )
    parser.add_argument("--identity-issuer", metavar="URL", help="the iss it must carry: the gateway's public_url")
    parser.add_argument(
        "--identity-header",
        default=IDENTITY_TOKEN_HEADER,
        metavar="NAME",
        help="the header carrying it: the gateway's upstream.identity_header (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="stderr log level (default: %(default)s)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every HTTP request to stderr")
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long shutdown waits for open connections before cancelling them (default: %(default)s)",
    )
    return parser.parse_args(argv)


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind a listening TCP socket on ``host``:``port`` (``port`` 0 picks a free port)."""
    family, kind, proto, _canonical, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


class UpstreamServer(uvicorn.Server):
    """A uvicorn server that announces readiness on stdout and exits with status 0 on SIGINT/SIGTERM."""

    def __init__(self, config: uvicorn.Config, ready_line: str) -> None:
        super().__init__(config)
        self.ready_line = ready_line

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start serving, then print the ready line (only once connections are being accepted)."""
        await super().startup(sockets=sockets)
        if not self.should_exit:
            print(self.ready_line, flush=True)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Turn SIGINT/SIGTERM into a graceful shutdown without re-raising them afterwards."""
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _EXIT_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGINT or SIGTERM; return the process exit status."""
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    security = transport_security(
        args.host, args.allowed_host, args.allowed_origin, enabled=args.dns_rebinding_protection
    )
    sock = bind_socket(args.host, args.port)
    with sock:
        port = sock.getsockname()[1]
        shown_host = f"[{args.host}]" if ":" in args.host else args.host
        verifier = None
        if args.identity_jwks:
            audience = args.identity_audience or f"http://{shown_host}:{port}"
            verifier = IdentityVerifier(args.identity_jwks, audience, issuer=args.identity_issuer)
            logger.info("verifying %s against %s (aud %s)", args.identity_header, args.identity_jwks, audience)
        app = build_app(create_server(verifier, args.identity_header), security=security)
        config = uvicorn.Config(
            app,
            log_config=None,
            log_level=args.log_level.lower(),
            access_log=args.access_log,
            timeout_graceful_shutdown=args.shutdown_timeout,
        )
        server = UpstreamServer(config, ready_line=f"{READY_LINE_PREFIX}http://{shown_host}:{port}")
        logger.info("serving MCP on http://%s:%d%s and %s", shown_host, port, MCP_PATH, SSE_PATH)
        server.run(sockets=[sock])
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
