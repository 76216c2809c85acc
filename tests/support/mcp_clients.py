"""Connected ``mcp.Client`` (SDK 2.x) instances for each way a client talks to an MCP server over HTTP.

Every factory is an async context manager yielding a connected ``Client`` and takes ``headers``,
extra HTTP headers put on every request the client makes (``X-API-Key``, ``Authorization``...):

* ``streamable_session_client``: Streamable HTTP, handshake era (``mode="legacy"``): ``initialize``,
  then ``Mcp-Session-Id`` on every POST, a GET stream for server-initiated messages, DELETE on exit.
* ``stateless_client``: Streamable HTTP, 2026-07-28 (``mode="2026-07-28"``): no handshake, no session;
  each request is a self-contained POST carrying ``MCP-Protocol-Version``, ``Mcp-Method`` and, for
  ``tools/call``/``prompts/get``/``resources/read``, ``Mcp-Name``.
* ``legacy_sse_client``: the legacy HTTP+SSE transport: GET ``/sse``, then POSTs to the URL its
  ``endpoint`` event names (``/messages/?session_id=...``).

``CLIENT_FACTORIES`` maps a short transport name to each factory, for parametrized tests.
The response cache is off by default so every call reaches the wire.

Progress: ``ProgressRecorder`` is a ``progress_callback`` that timestamps each notification and sets
``first`` when the first one arrives; ``call_tool_with_progress`` wraps a call with one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import httpx2
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, Implementation

STATELESS_PROTOCOL_VERSION: Final = "2026-07-28"

HTTP_TIMEOUT = 30.0
"""Seconds for connect/write/pool on every HTTP request."""

SSE_READ_TIMEOUT = 300.0
"""Seconds a response or event stream may stay silent before the client gives up on it."""

READ_TIMEOUT = 60.0
"""Default per-request ``Client`` timeout: a request without an answer by then fails instead of hanging."""

MAX_SSE_EVENT_SIZE = 64 * 1024 * 1024
"""Streamable HTTP clients accept SSE events up to this size (the SDK's default is 1 MiB, too small
for ``big_text(1024)``). The legacy ``sse_client`` has a fixed 1 MiB per-event cap."""

CLIENT_INFO = Implementation(name="upstream-mcp-tests", version="0")


class ClientFactory(Protocol):
    """Signature shared by the three client factories."""

    def __call__(
        self,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        read_timeout_seconds: float | None = READ_TIMEOUT,
    ) -> AbstractAsyncContextManager[Client]: ...


def _http_client(headers: Mapping[str, str] | None) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(headers=dict(headers or {}), timeout=httpx2.Timeout(HTTP_TIMEOUT, read=SSE_READ_TIMEOUT))


@asynccontextmanager
async def _streamable_client(
    url: str,
    headers: Mapping[str, str] | None,
    mode: str,
    read_timeout_seconds: float | None,
    max_sse_event_size: int | None,
    client_options: dict[str, Any],
) -> AsyncIterator[Client]:
    async with _http_client(headers) as http_client:
        transport = streamable_http_client(url, http_client=http_client, max_sse_event_size=max_sse_event_size)
        client = Client(
            transport,
            mode=mode,
            read_timeout_seconds=read_timeout_seconds,
            client_info=CLIENT_INFO,
            cache=None,
            **client_options,
        )
        async with client:
            yield client


@asynccontextmanager
async def streamable_session_client(
    url: str,
    headers: Mapping[str, str] | None = None,
    *,
    read_timeout_seconds: float | None = READ_TIMEOUT,
    max_sse_event_size: int | None = MAX_SSE_EVENT_SIZE,
    **client_options: Any,
) -> AsyncIterator[Client]:
    """A ``Client`` on a handshake-era Streamable HTTP session at ``url`` (the ``/mcp`` endpoint).

    ``client_options`` go to ``mcp.Client`` (e.g. ``logging_callback``, ``message_handler``).
    Exiting sends DELETE to end the session.
    """
    async with _streamable_client(
        url, headers, "legacy", read_timeout_seconds, max_sse_event_size, client_options
    ) as client:
        yield client


@asynccontextmanager
async def stateless_client(
    url: str,
    headers: Mapping[str, str] | None = None,
    *,
    read_timeout_seconds: float | None = READ_TIMEOUT,
    max_sse_event_size: int | None = MAX_SSE_EVENT_SIZE,
    **client_options: Any,
) -> AsyncIterator[Client]:
    """A ``Client`` sending stateless 2026-07-28 requests to ``url`` (the ``/mcp`` endpoint).

    Entering sends nothing: the client adopts 2026-07-28 without probing ``server/discover``.
    """
    async with _streamable_client(
        url, headers, STATELESS_PROTOCOL_VERSION, read_timeout_seconds, max_sse_event_size, client_options
    ) as client:
        yield client


@asynccontextmanager
async def legacy_sse_client(
    url: str,
    headers: Mapping[str, str] | None = None,
    *,
    read_timeout_seconds: float | None = READ_TIMEOUT,
    **client_options: Any,
) -> AsyncIterator[Client]:
    """A ``Client`` on the legacy HTTP+SSE transport; ``url`` is the SSE endpoint (``/sse``).

    ``headers`` go on the GET and on every message POST.
    """
    transport = sse_client(url, headers=dict(headers or {}), timeout=HTTP_TIMEOUT, sse_read_timeout=SSE_READ_TIMEOUT)
    client = Client(
        transport,
        mode="legacy",
        read_timeout_seconds=read_timeout_seconds,
        client_info=CLIENT_INFO,
        cache=None,
        **client_options,
    )
    async with client:
        yield client


CLIENT_FACTORIES: Final[Mapping[str, ClientFactory]] = {
    "streamable-session": streamable_session_client,
    "stateless-2026": stateless_client,
    "legacy-sse": legacy_sse_client,
}
"""Transport name to factory. Note ``legacy-sse`` takes the ``/sse`` URL, the others ``/mcp``."""


@dataclass(frozen=True)
class ProgressEvent:
    """One progress notification and when it arrived (``time.monotonic()``)."""

    progress: float
    total: float | None
    message: str | None
    received_at: float


@dataclass
class ProgressRecorder:
    """A ``progress_callback`` that records every notification with its arrival time.

    ``first`` is set when the first notification arrives, so a test can wait for it
    (``async with asyncio.timeout(...): await recorder.first.wait()``) while the call is pending.
    """

    events: list[ProgressEvent] = field(default_factory=list)
    first: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.events.append(ProgressEvent(progress, total, message, time.monotonic()))
        self.first.set()


@dataclass(frozen=True)
class TimedToolCall:
    """A tool call's result, when it was sent and answered (``time.monotonic()``), and its progress."""

    result: CallToolResult
    started_at: float
    finished_at: float
    progress: list[ProgressEvent]


async def call_tool_with_progress(
    client: Client,
    name: str,
    arguments: dict[str, Any] | None = None,
    *,
    recorder: ProgressRecorder | None = None,
    timeout: float = READ_TIMEOUT,
) -> TimedToolCall:
    """Call ``name`` asking for progress; time the call and each notification.

    Pass your own ``recorder`` to watch ``recorder.first`` from another task during the call.
    """
    recorder = recorder if recorder is not None else ProgressRecorder()
    started_at = time.monotonic()
    async with asyncio.timeout(timeout):
        result = await client.call_tool(name, arguments, progress_callback=recorder)
    return TimedToolCall(
        result=result, started_at=started_at, finished_at=time.monotonic(), progress=list(recorder.events)
    )
