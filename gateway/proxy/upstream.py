"""Talking to the upstream MCP server: one pooled ``aiohttp.ClientSession``, timeouts, relaying.

Opening a request waits at most ``first_byte_timeout`` for the response headers (504 after that);
a refused or broken connection is a 502. Nothing is retried: a ``tools/call`` may have side effects.
A failure is ``NEVER_REACHED`` (and the quota refunds it) only when the request provably never left the
gateway: no connection (refused, unresolvable, connect timeout) or no request headers written yet.
Relaying copies the body chunk by chunk as it arrives, so each SSE event reaches the client when the
upstream sends it; only an answer of known length up to ``SMALL_BODY`` is read whole first (a chunked
JSON answer streams too). ``stream_idle_timeout`` bounds each wait for a chunk, never the whole answer.
When the client goes away the upstream connection is closed, which cancels the upstream request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import SimpleNamespace

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from gateway.errors import UpstreamAuthFailed, UpstreamError, UpstreamNoAnswer, UpstreamRefused, UpstreamTimeout
from gateway.metrics import Metrics
from gateway.proxy.headers import downstream_response_headers
from gateway.request_metrics import note_upstream

log = logging.getLogger("gateway.upstream")

EVENT_STREAM = "text/event-stream"
SMALL_BODY = 256 * 1024


class UpstreamUnreachable(UpstreamRefused):
    """No connection to the upstream (refused, unresolvable, TLS failure): the request never left (502)."""


class UpstreamConnectTimeout(UpstreamNoAnswer):
    """No connection to the upstream in time: the request never left the gateway (504)."""


NEVER_REACHED = (UpstreamUnreachable, UpstreamConnectTimeout)
"""Failures after which the upstream provably never saw the request (the quota refunds these only)."""


class _Delivery:
    """Whether the request headers were written to the upstream (known only through ``delivery_trace``)."""

    def __init__(self) -> None:
        self.tracked = False
        self.sent = False

    def never_sent(self) -> bool:
        return self.tracked and not self.sent


async def _on_request_start(session: object, ctx: SimpleNamespace, params: object) -> None:
    if isinstance(ctx.trace_request_ctx, _Delivery):
        ctx.trace_request_ctx.tracked = True


async def _on_headers_sent(session: object, ctx: SimpleNamespace, params: object) -> None:
    if isinstance(ctx.trace_request_ctx, _Delivery):
        ctx.trace_request_ctx.sent = True


def delivery_trace() -> aiohttp.TraceConfig:
    """Tells ``Upstream`` whether a failed request had left the gateway (sessions without it: assume it had)."""
    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(_on_request_start)
    trace.on_request_headers_sent.append(_on_headers_sent)
    return trace


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


def new_client_session(*, connect_timeout: float, max_connections: int) -> aiohttp.ClientSession:
    """The one session to the upstream, shared by every request of this process."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max_connections, limit_per_host=max_connections),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
        trace_configs=[delivery_trace()],
    )


class Upstream:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        first_byte_timeout: float,
        idle_timeout: float,
        metrics: Metrics,
    ) -> None:
        self._session = session
        self._first_byte_timeout = first_byte_timeout
        self._idle_timeout = idle_timeout or None
        self._metrics = metrics
        self._waited: dict[aiohttp.ClientResponse, float] = {}

    @contextlib.asynccontextmanager
    async def open(
        self, method: str, url: str, *, headers: CIMultiDict[str], body: bytes | None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The upstream's response, headers received (see ``_exchange``).

        Every upstream failure is counted by kind in ``gateway_upstream_errors``, including those raised while
        the response is relayed; the wait for the headers is kept for ``relay`` to report as upstream time."""
        started = time.perf_counter()
        answered = False
        try:
            async with self._exchange(method, url, headers=headers, body=body) as response:
                answered = True
                self._waited[response] = time.perf_counter() - started
                if response.status >= 500:
                    self._failed("bad_status")
                try:
                    yield response
                finally:
                    self._waited.pop(response, None)
        except UpstreamAuthFailed:
            self._failed("auth_rejected")
            raise
        except UpstreamTimeout:
            self._failed("timeout")
            raise
        except UpstreamError:
            self._failed("stream_broken" if answered else "refused")
            raise

    def _failed(self, kind: str) -> None:
        self._metrics.upstream_errors.labels(kind=kind).inc()

    @contextlib.asynccontextmanager
    async def _exchange(
        self, method: str, url: str, *, headers: CIMultiDict[str], body: bytes | None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The upstream's response, headers received; closed (connection dropped if unread) on exit."""
        delivery = _Delivery()
        try:
            async with asyncio.timeout(self._first_byte_timeout):
                response = await self._session.request(
                    method, url, headers=headers, data=body, allow_redirects=False, trace_request_ctx=delivery
                )
        except TimeoutError as exc:  # includes aiohttp.ConnectionTimeoutError (the connect timeout)
            never_sent = isinstance(exc, aiohttp.ConnectionTimeoutError) or delivery.never_sent()
            error = UpstreamConnectTimeout if never_sent else UpstreamNoAnswer
            raise error("Upstream MCP server did not answer in time") from exc
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("upstream %s %s failed: %s", method, url, type(exc).__name__)
            never_sent = isinstance(exc, aiohttp.ClientConnectorError) or delivery.never_sent()
            raise (UpstreamUnreachable if never_sent else UpstreamRefused)("Upstream MCP server unavailable") from exc
        try:
            if response.status in (401, 403, 407):
                log.warning(
                    "upstream answered %d to %s; is it configured to trust the gateway?",
                    response.status,
                    method,
                )
                raise UpstreamAuthFailed("Upstream authentication failed")
            yield response
        finally:
            response.close()

    async def relay(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        *,
        transform: ChunkFilter | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> web.StreamResponse:
        """Send the upstream's response to the client as it arrives (with ``extra_headers`` of the gateway's)."""
        headers = downstream_response_headers(upstream.headers)
        headers.update(extra_headers or {})
        note_upstream(request, self._waited.get(upstream, 0.0))
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
        response = web.StreamResponse(status=upstream.status, headers=headers)
        await response.prepare(request)
        while True:
            try:
                async with asyncio.timeout(self._idle_timeout):
                    chunk = await upstream.content.readany()
            except EndStream as end:  # the gateway ends the stream (revocation, expiry, shutdown)
                with contextlib.suppress(ConnectionResetError):
                    await response.write(end.final)
                break
            except TimeoutError:
                log.info("closing a stream idle for %.0f s", self._idle_timeout or 0)
                break
            except (aiohttp.ClientError, OSError) as exc:
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

    async def _read_small(self, upstream: aiohttp.ClientResponse) -> bytes:
        """A body of known length up to ``SMALL_BODY``; the idle timeout bounds each wait for a chunk."""
        body = bytearray()
        try:
            while True:
                async with asyncio.timeout(self._idle_timeout):
                    chunk = await upstream.content.readany()
                if not chunk:
                    return bytes(body)
                body += chunk
        except TimeoutError as exc:
            raise UpstreamTimeout("Upstream MCP server did not finish its answer in time") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamError("Upstream MCP server broke off its answer") from exc
