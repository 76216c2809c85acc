"""Client connections: read deadlines for request heads and bodies, and caps on how many connections are open.

Every accepted connection is a ``GuardedRequestHandler`` (aiohttp's ``RequestHandler`` with a watchdog):

- the request head must arrive whole within ``header_timeout`` of the connection opening (or, on a kept-alive
  connection, of the first byte of the next request); otherwise the connection is closed (a 408 is written first
  when part of a head had arrived);
- a request body that makes no progress for ``body_timeout`` seconds while the gateway is reading ends the request
  with 408 and closes the connection (time the gateway itself stops reading, under flow control, does not count);
- ``ConnectionTable`` counts open connections per client address (IPv6 by /64; trusted proxies uncapped) and
  overall. Past the per-address cap a new connection is closed at once. Past the overall cap the longest-waiting
  connection (slow or idle: no request in progress) of an address holding at least as many connections as the
  newcomer's is closed to make room; when there is none, the new one is closed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader

from gateway.net import address_bucket, is_trusted

log = logging.getLogger("gateway.connections")

REQUEST_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\nContent-Type: text/plain\r\n\r\n"
)
EVICTION_SCAN = 64
"""Waiting connections looked at, oldest first, for one to close at the overall cap (bounds the work per accept)."""
QUIET_LOG_INTERVAL = 10.0
"""At most one log line per this many seconds about refused connections, and one about failing ``accept()``."""


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float
    body_timeout: float
    max_connections: int
    """Open client connections at most (at least 1)."""
    max_per_address: int
    """Open connections per client address at most; 0: no per-address cap."""
    uncapped_peers: frozenset[str] = frozenset()
    """Peers the per-address cap does not apply to: trusted front proxies, which carry every client's traffic."""


def peer_host(peername: object) -> str:
    """The peer's address as ``request.remote`` spells it; ``local`` for a Unix socket."""
    host = peername[0] if isinstance(peername, tuple) and peername else peername
    return host if isinstance(host, str) and host else "local"


class QuietLog:
    """One line per ``interval`` seconds at most, with the count of what was left out (on the loop's clock)."""

    def __init__(self, logger: logging.Logger, interval: float, clock: Callable[[], float]) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._next = float("-inf")
        self._suppressed = 0

    def warning(self, message: str, *args: object) -> None:
        now = self._clock()
        if now < self._next:
            self._suppressed += 1
            return
        suffix = f" ({self._suppressed} similar events not logged)" if self._suppressed else ""
        self._suppressed = 0
        self._next = now + self._interval
        self._logger.warning(message + suffix, *args)


class ConnectionTable:
    """Which connections are open, by address, and which of them are waiting for a request head (evictable)."""

    def __init__(self, limits: ConnectionLimits, refusals: QuietLog) -> None:
        self.limits = limits
        self._refusals = refusals
        self._by_address: dict[str, int] = {}
        self._open: set[GuardedRequestHandler] = set()
        self._waiting: dict[GuardedRequestHandler, None] = {}  # insertion order: longest waiting first

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, conn: GuardedRequestHandler) -> bool:
        """Count ``conn`` in, making room if needed; False: it must be closed unserved."""
        cap = 0 if is_trusted(conn.peer, self.limits.uncapped_peers) else self.limits.max_per_address
        if cap and self._by_address.get(conn.address, 0) >= cap:
            self._refusals.warning("refusing connections from %s: %d already open", conn.address, cap)
            return False
        if len(self._open) >= self.limits.max_connections:
            victim = self._victim_for(conn.address)
            if victim is None:
                self._refusals.warning("refusing connections: %d open, none idle to make room", len(self._open))
                return False
            self.release(victim)
            victim.force_close()
        self._open.add(conn)
        self._by_address[conn.address] = self._by_address.get(conn.address, 0) + 1
        return True

    def _victim_for(self, address: str) -> GuardedRequestHandler | None:
        """The longest-waiting connection of an address holding at least as many as ``address`` does: a burst
        from busy addresses displaces their own kind, never a light address's fresh connection."""
        floor = self._by_address.get(address, 0)
        for conn in itertools.islice(self._waiting, EVICTION_SCAN):
            if self._by_address[conn.address] >= floor:
                return conn
        return None

    def release(self, conn: GuardedRequestHandler) -> None:
        if conn not in self._open:
            return
        self._open.discard(conn)
        self._waiting.pop(conn, None)
        left = self._by_address[conn.address] - 1
        if left:
            self._by_address[conn.address] = left
        else:
            del self._by_address[conn.address]

    def waiting(self, conn: GuardedRequestHandler) -> None:
        if conn in self._open:
            self._waiting.pop(conn, None)
            self._waiting[conn] = None

    def busy(self, conn: GuardedRequestHandler) -> None:
        self._waiting.pop(conn, None)


class GuardedRequestHandler(web.RequestHandler):
    """aiohttp's per-connection protocol, with the read deadlines and the table's bookkeeping."""

    def __init__(self, manager: web.Server, *, table: ConnectionTable, loop: asyncio.AbstractEventLoop, **kw: Any):
        super().__init__(manager, loop=loop, **kw)
        self._table = table
        self._clock = loop.time
        self._call_at = loop.call_at
        self.peer = self.address = "local"
        self._admitted = False
        self._in_request = False
        self._head_started = False
        self._head_deadline: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None
        self._unread_body: StreamReader | None = None  # answered before its body arrived: still draining
        self._body_due = 0.0
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_timed_out = False
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.peer = peer_host(transport.get_extra_info("peername"))
        self.address = address_bucket(self.peer)
        if not self._table.admit(self):
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self._table.waiting(self)
        self._arm_head_deadline()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._table.release(self)
        self._cancel_timers()
        if self._admitted:
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if data:
            if self._in_request:
                self._body_due = self._clock() + self._table.limits.body_timeout
            elif self._unread_body is not None and not self._unread_body.is_eof():
                pass  # the rest of an answered request's body (aiohttp drains it for lingering_time at most)
            elif not self._head_started:
                self._head_started = True
                if self._head_deadline is None:
                    self._arm_head_deadline()
        super().data_received(data)

    def pause_reading(self) -> None:
        self._paused = True
        super().pause_reading()

    def resume_reading(self, resume_parser: bool = True) -> None:
        self._paused = False
        self._body_due = self._clock() + self._table.limits.body_timeout
        super().resume_reading(resume_parser)

    def request_started(self, payload: StreamReader) -> None:
        """A request head was parsed and its handling begins (called by the request factory)."""
        self._in_request = True
        self._table.busy(self)
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None
        if not payload.is_eof():
            self._body = payload
            self._body_due = self._clock() + self._table.limits.body_timeout
            self._body_timer = self._call_at(self._body_due, self._check_body)

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        result = await super().finish_response(request, resp, start_time)
        self._in_request = False
        self._head_started = False
        self._unread_body = None if request.content.is_eof() else request.content
        self._body = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        if self._body_timed_out:
            self.force_close()  # the rest of the body will not come in time: no lingering, no keep-alive
        else:
            self._table.waiting(self)  # idle keep-alive: bounded by keepalive_timeout, evictable
        return result

    def _arm_head_deadline(self) -> None:
        self._head_deadline = self._call_at(self._clock() + self._table.limits.header_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self._in_request or self.transport is None:
            return
        if self._head_started:
            self.transport.write(REQUEST_TIMEOUT_RESPONSE)
        self.force_close()

    def _check_body(self) -> None:
        self._body_timer = None
        body = self._body
        if body is None or body.is_eof():
            return
        now = self._clock()
        if self._paused:  # the gateway is not reading: the client is not the one stalling
            self._body_due = now + self._table.limits.body_timeout
        if now < self._body_due:
            self._body_timer = self._call_at(self._body_due, self._check_body)
            return
        self._body_timed_out = True
        body.set_exception(web.HTTPRequestTimeout(text="The request body did not arrive in time."))

    def _cancel_timers(self) -> None:
        for timer in (self._head_deadline, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_deadline = self._body_timer = None


RequestFactory = Callable[
    [RawRequestMessage, StreamReader, web.RequestHandler, AbstractStreamWriter, "asyncio.Task[None]"],
    web.BaseRequest,
]


def guard_requests(server: web.Server) -> None:
    """Tell each guarded connection when a request of theirs begins (the server builds every request here)."""
    make: RequestFactory = server.request_factory

    def factory(
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: web.RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        if isinstance(protocol, GuardedRequestHandler):
            protocol.request_started(payload)
        return make(message, payload, protocol, writer, task)

    server.request_factory = factory


def protocol_factory(
    server: web.Server, table: ConnectionTable, handler_args: dict[str, Any]
) -> Callable[[], GuardedRequestHandler]:
    loop = asyncio.get_running_loop()
    guard_requests(server)

    def make() -> GuardedRequestHandler:
        return GuardedRequestHandler(server, table=table, loop=loop, **handler_args)

    return make
