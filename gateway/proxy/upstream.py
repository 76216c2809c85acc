"""Talking to the upstream MCP server: pooled HTTP/1.1 connections (``gateway.proxy.http1``), timeouts, relaying.

Opening a request waits at most ``first_byte_timeout`` for the response headers (504 after that);
a refused or broken connection is a 502. Nothing is retried: a ``tools/call`` may have side effects.
A failure is ``NEVER_REACHED`` (and the quota refunds it) only when the request provably never left the
gateway: no connection (refused, unresolvable, connect timeout, none free in time), so nothing was written.
Relaying copies the body chunk by chunk as it arrives, so each SSE event reaches the client when the
upstream sends it; only an answer of known length up to ``SMALL_BODY`` is read whole first (a chunked
JSON answer streams too). ``stream_idle_timeout`` bounds each wait for a chunk, never the whole answer.
When the client goes away the upstream connection is closed, which cancels the upstream request.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from gateway.errors import UpstreamAuthFailed, UpstreamError, UpstreamNoAnswer, UpstreamRefused, UpstreamTimeout
from gateway.metrics import Metrics
from gateway.proxy import http1
from gateway.proxy.headers import downstream_response_headers
from gateway.proxy.http1 import ConnectionPools, Response
from gateway.request_metrics import note_upstream

log = logging.getLogger("gateway.upstream")

EVENT_STREAM = "text/event-stream"
SMALL_BODY = 256 * 1024
HEALTH_CONNECTIONS = 2
"""Connections of the readiness probe's session (``gateway.health``): one probe at a time, and a spare."""


class UpstreamUnreachable(UpstreamRefused):
    """No connection to the upstream (refused, unresolvable, TLS failure): the request never left (502)."""


class UpstreamConnectTimeout(UpstreamNoAnswer):
    """No connection to the upstream in time: the request never left the gateway (504)."""


NEVER_REACHED = (UpstreamUnreachable, UpstreamConnectTimeout)
"""Failures after which the upstream provably never saw the request (the quota refunds these only)."""


ChunkFilter = Callable[[bytes], Awaitable[bytes]]
"""Rewrites a stream chunk by chunk; may raise ``EndStream`` to finish the stream early."""


def error_event(message: str) -> bytes:
    """The last SSE event of a stream the gateway ends (clients reconnect, or re-authenticate on a 401)."""
    return b"event: error\ndata: " + json.dumps({"error": message}).encode() + b"\n\n"


class EndStream(Exception):
    """Raised by a ``ChunkFilter`` to close the client's stream after sending ``final``."""

    def __init__(self, final: bytes) -> None:
        super().__init__("stream ended by the gateway")
        self.final = final


def new_client_session(*, connect_timeout: float) -> aiohttp.ClientSession:
    """The readiness probe's session (``gateway.health``); proxied requests go through ``Upstream``'s pools."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=HEALTH_CONNECTIONS),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
    )


def new_connection_pools(*, connect_timeout: float, max_connections: int) -> ConnectionPools:
    """The connections to the upstream, shared by every request of this process (``max_connections`` per origin:
    ``upstream.url`` and ``upstream.sse_url`` share one pool unless they name different origins)."""
    return ConnectionPools(max_connections=max_connections, connect_timeout=connect_timeout)


class Upstream:
    def __init__(
        self,
        pools: ConnectionPools,
        *,
        first_byte_timeout: float,
        idle_timeout: float,
        metrics: Metrics,
    ) -> None:
        self._pools = pools
        self._first_byte_timeout = first_byte_timeout
        self._idle_timeout = idle_timeout or None
        self._metrics = metrics

    def open(self, method: str, url: str, *, headers: CIMultiDict[str], body: bytes | None) -> _Opening:
        """The upstream's response, headers received, as an async context manager (closed on exit: its
        connection is reused only when the answer was read to the end).

        Every upstream failure is counted by kind in ``gateway_upstream_errors``, including those raised while
        the response is relayed; its ``head_seconds`` (the wait for the headers) ``relay`` reports as upstream time."""
        return _Opening(self, method, url, headers, body)

    def _failed(self, kind: str) -> None:
        self._metrics.upstream_errors.labels(kind=kind).inc()

    async def _exchange(self, method: str, url: str, headers: CIMultiDict[str], body: bytes | None) -> Response:
        """The upstream's response, headers received, or the gateway's error for the failure (counted)."""
        pool, target, host = self._pools.route(url)
        try:
            response = await pool.request(
                method,
                target,
                host,
                headers,
                body,
                first_byte_timeout=self._first_byte_timeout,
                idle_timeout=self._idle_timeout,
            )
        except (http1.ConnectTimeout, http1.NoAnswer) as exc:
            self._failed("timeout")
            timeout = UpstreamConnectTimeout if isinstance(exc, http1.ConnectTimeout) else UpstreamNoAnswer
            raise timeout("Upstream MCP server did not answer in time") from exc
        except (http1.NotSent, http1.ConnectionLost, http1.ProtocolError) as exc:
            # The path only: a legacy message URL's query holds the session id.
            log.warning("upstream %s %s failed: %s", method, urlsplit(url).path, exc)
            self._failed("refused")
            refused = UpstreamUnreachable if isinstance(exc, http1.NotSent) else UpstreamRefused
            raise refused("Upstream MCP server unavailable") from exc
        if response.status in (401, 403, 407):
            response.close()
            log.warning("upstream answered %d to %s; is it configured to trust the gateway?", response.status, method)
            self._failed("auth_rejected")
            raise UpstreamAuthFailed("Upstream authentication failed")
        if response.status >= 500:
            self._failed("bad_status")
        return response

    async def relay(
        self,
        request: web.Request,
        upstream: Response,
        *,
        transform: ChunkFilter | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> web.StreamResponse:
        """Send the upstream's response to the client as it arrives (with ``extra_headers`` of the gateway's)."""
        headers = downstream_response_headers(upstream.headers)
        headers.update(extra_headers or {})
        note_upstream(request, upstream.head_seconds)
        streaming = upstream.content_type == EVENT_STREAM
        length = upstream.content_length
        if not streaming and transform is None and length is not None and length <= SMALL_BODY:
            reading = time.perf_counter()
            body = await self._read_small(upstream)
            note_upstream(request, time.perf_counter() - reading)
            return web.Response(status=upstream.status, headers=headers, body=body)
        if streaming:
            headers["X-Accel-Buffering"] = "no"
            headers.setdefault("Cache-Control", "no-cache")
        # When the first bytes came with the head (an MCP server's first event usually does), the client gets the
        # head and them in one write, as from the upstream: one wake-up for it, not two.
        kind = _HeadWithFirstChunk if upstream.has_data else web.StreamResponse
        response = kind(status=upstream.status, headers=headers)
        await response.prepare(request)
        while True:
            try:
                chunk = await upstream.content.readany()  # each wait bounded by the idle timeout
            except EndStream as end:  # the gateway ends the stream (revocation, expiry, shutdown)
                with contextlib.suppress(ConnectionResetError):
                    await response.write(end.final)
                break
            except TimeoutError:
                log.info("closing a stream idle for %.0f s", self._idle_timeout or 0)
                break
            except OSError as exc:
                log.info("upstream stream ended abruptly: %s", type(exc).__name__)
                self._failed("stream_broken")
                break
            if not chunk:
                break
            try:
                if transform is not None:
                    chunk = await transform(chunk)
                await response.write(chunk)
            except EndStream as end:
                with contextlib.suppress(ConnectionResetError):
                    await response.write(end.final)
                break
            except ConnectionResetError:
                return response
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    async def _read_small(self, upstream: Response) -> bytes:
        """A body of known length up to ``SMALL_BODY``; the idle timeout bounds each wait for a chunk."""
        body = bytearray()
        try:
            while True:
                chunk = await upstream.content.readany()
                if not chunk:
                    return bytes(body)
                body += chunk
        except TimeoutError as exc:
            raise UpstreamTimeout("Upstream MCP server did not finish its answer in time") from exc
        except OSError as exc:
            raise UpstreamError("Upstream MCP server broke off its answer") from exc


class _HeadWithFirstChunk(web.StreamResponse):
    """A relayed answer whose status line and headers go out with its first chunk (aiohttp's opt-in buffering),
    used only when that chunk has already arrived, so the head is never held back waiting for one."""

    _send_headers_immediately = False


class _Opening:
    """``Upstream.open``: a plain class rather than ``contextlib.asynccontextmanager``, which costs an async
    generator per request. Errors raised inside the block are counted like those of the exchange."""

    __slots__ = ("_body", "_headers", "_method", "_response", "_upstream", "_url")

    def __init__(
        self, upstream: Upstream, method: str, url: str, headers: CIMultiDict[str], body: bytes | None
    ) -> None:
        self._upstream = upstream
        self._method = method
        self._url = url
        self._headers = headers
        self._body = body
        self._response: Response | None = None

    async def __aenter__(self) -> Response:
        response = await self._upstream._exchange(self._method, self._url, self._headers, self._body)
        self._response = response
        return response

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        response = self._response
        if response is not None:
            self._response = None
            response.close()
        if exc is None:
            return
        if isinstance(exc, UpstreamAuthFailed):
            self._upstream._failed("auth_rejected")
        elif isinstance(exc, UpstreamTimeout):
            self._upstream._failed("timeout")
        elif isinstance(exc, UpstreamError):
            self._upstream._failed("stream_broken")
