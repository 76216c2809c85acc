"""Per-request series: ``gateway_http_requests``, time to headers, upstream time vs. gateway overhead, open streams.

The outermost middleware starts a ``RequestTiming``; the ``on_response_prepare`` hook (the moment the status and
headers leave) counts the request under its route table label, observes the latencies and, for an event stream
to a client, raises ``gateway_open_streams`` until the handler returns. The upstream relay reports how long it
waited for the upstream (``note_upstream``); the rest, up to our own headers, is the gateway's overhead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from gateway.hooks import add_response_hook
from gateway.metrics import METRICS, ROUTES, RequestSeries, bounded
from gateway.routing import route_of

METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
STREAM_TRANSPORTS: Final = {"mcp": "streamable_http", "mcp_sse": "sse"}
"""Routes whose event-stream responses count as open streams, and the transport label of each."""
EVENT_STREAM: Final = "text/event-stream"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class RequestTiming:
    route: str
    started: float
    upstream: float | None = None
    """Seconds spent waiting on the upstream (headers, and a small body read whole), when it was called."""
    answered: bool = False
    stream: str | None = None
    """The transport label while this request holds an open event stream to its client."""


TIMING = web.RequestKey("request_timing", RequestTiming)


def route_label(request: web.Request) -> str:
    """The route's label in the route table, one of the closed ``ROUTES`` names (never the raw path)."""
    return bounded(route_of(request).label, ROUTES)


def note_upstream(request: web.Request, seconds: float) -> None:
    """Add ``seconds`` of waiting on the upstream to this request's timing."""
    timing = request.get(TIMING)
    if timing is not None:
        timing.upstream = (timing.upstream or 0.0) + seconds


@web.middleware
async def request_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost middleware: times the request and closes its open-stream count when the handler ends."""
    timing = RequestTiming(route_label(request), time.perf_counter())
    request[TIMING] = timing
    try:
        return await handler(request)
    finally:
        if timing.stream is not None:
            request.app[METRICS].open_streams_of(timing.stream).dec()


def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    timing = request.get(TIMING)
    if timing is None or timing.answered:
        return
    timing.answered = True
    metrics = request.app[METRICS]
    elapsed = time.perf_counter() - timing.started
    method = request.method if request.method in METHODS else "other"
    series = metrics.request_series(timing.route, method, response.status)
    # Counted once the status and headers (and, for a stream, its first event) are on their way: the same
    # figures, a few microseconds later, off the answer's path.
    asyncio.get_running_loop().call_soon(_count, series, elapsed, timing.upstream)
    transport = STREAM_TRANSPORTS.get(timing.route)
    if transport is not None and response.content_type == EVENT_STREAM:
        metrics.open_streams_of(transport).inc()
        timing.stream = transport


def _count(series: RequestSeries, elapsed: float, upstream: float | None) -> None:
    series.requests.inc()
    series.request_seconds.observe(elapsed)
    if upstream is not None:
        series.upstream_seconds.observe(upstream)
        series.overhead_seconds.observe(max(0.0, elapsed - upstream))


def setup_request_metrics(app: web.Application) -> None:
    """Count every answer; the ``request_metrics`` middleware must be the app's first."""
    add_response_hook(app, _on_prepare)
