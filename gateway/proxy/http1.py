"""A lean pooled HTTP/1.1 client for the hop to the upstream MCP server, on ``asyncio.Protocol`` and ``httptools``.

Why: aiohttp's client costs about 110 µs of CPU per proxied request; this one does the little the gateway needs
(one origin, no redirects, cookies, decompression, proxies or retries) in about a third of that.

A ``Pool`` holds at most ``max_connections`` connections to one origin. A request takes the most recently used
idle connection (LIFO), or opens one within ``connect_timeout``, or waits in FIFO order for one to come free. An
idle connection is never reused once its transport is closing or it has been idle ``idle_expiry`` seconds (uvicorn
closes idle connections after 5 s: a request written on a connection the server is closing is lost), nor after an
answer that was not received to the end, that said ``Connection: close``, or that the parser says ends the
connection. The request head and body go out in one ``transport.write``; from then on the upstream may have acted
on it, so the errors say which side of that line a failure fell on: ``NotSent`` and ``ConnectTimeout`` before,
``ConnectionLost``, ``NoAnswer`` and ``ProtocolError`` after (see ``gateway.proxy.http1_response``).
"""

from __future__ import annotations

import asyncio
import collections
import re
import ssl
from typing import cast
from urllib.parse import quote, urlsplit

from multidict import CIMultiDict

from gateway.proxy.http1_response import (
    BodyBroken,
    BodyTimeout,
    ConnectionLost,
    NoAnswer,
    ProtocolError,
    Response,
)

__all__ = [
    "BodyBroken",
    "BodyTimeout",
    "ConnectTimeout",
    "ConnectionLost",
    "ConnectionPools",
    "InvalidHeader",
    "NoAnswer",
    "NotSent",
    "Pool",
    "ProtocolError",
    "Response",
]

IDLE_EXPIRY = 4.0
"""Seconds an idle connection may be reused: under uvicorn's 5 s keep-alive, so the server never closes it first."""
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_UNSAFE_TARGET = re.compile(r"[^\x21-\x7e]")
_CACHED_ROUTES = 64


class NotSent(Exception):
    """The request never left: no connection to the origin (refused, unresolvable, TLS failure, pool closed)."""


class ConnectTimeout(NotSent):
    """No connection to the origin (or none free) in time: the request never left."""


class InvalidHeader(ValueError):
    """A header name or value with CR, LF or NUL: refused before anything is written (it would split the head)."""


class Connection(asyncio.Protocol):
    """One keep-alive connection; bytes received go to the ``Response`` of the exchange in progress."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.response: Response | None = None
        self.idle_since = 0.0
        self.lost = False
        self.paused = False
        self.counted = True
        """Counts toward the pool's ``max_connections`` (until the pool lets it go)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # bytes nobody asked for: the connection cannot be trusted
            self.close_transport()
            return
        response.feed(data)

    def eof_received(self) -> bool | None:
        return None  # close the transport: a half-closed connection is of no further use

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        response = self.response
        if response is not None:
            response.connection_lost(exc)
        else:
            self.pool.lost_idle(self)

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and self.paused:
            self.paused = False
            self.transport.resume_reading()

    def close_transport(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def reusable(self) -> bool:
        return not self.lost and self.transport is not None and not self.transport.is_closing()

    def release(self, keep: bool) -> None:
        """The exchange is over (``Response.close``): back to the pool when ``keep``, else closed."""
        self.response = None
        self.pool.release(self, keep)


class Pool:
    """Connections to one origin (``scheme://host:port``), shared by every request of this process."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        *,
        max_connections: int,
        connect_timeout: float,
        idle_expiry: float = IDLE_EXPIRY,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._host = host
        self._port = port
        self._ssl = (ssl_context or ssl.create_default_context()) if scheme == "https" else None
        self._max = max_connections
        self._connect_timeout = connect_timeout
        self._idle_expiry = idle_expiry
        self._idle: collections.deque[Connection] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[Connection | None]] = collections.deque()
        self._count = 0
        self._connections: set[Connection] = set()
        self._closed = False

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    @property
    def waiting(self) -> int:
        """Callers queued for a connection (all ``max_connections`` are in use)."""
        return len(self._waiters)

    async def request(
        self,
        method: str,
        target: str,
        host: str,
        headers: CIMultiDict[str],
        body: bytes | None,
        *,
        first_byte_timeout: float,
        idle_timeout: float | None,
    ) -> Response:
        """Send ``method target`` and return the response once its head has arrived (``close()`` it when done).

        ``first_byte_timeout`` bounds the wait for a connection and for the head together; ``idle_timeout`` (None:
        unbounded) each later wait for a body chunk. ``headers`` must not hold ``Host`` or ``Content-Length``:
        this writes them (``Content-Length: 0`` for a POST, PUT or PATCH without a body)."""
        payload = serialize(method, target, host, headers, body)
        loop = self._loop
        started = loop.time()
        deadline = started + first_byte_timeout
        conn = await self._acquire(deadline)
        if not conn.reusable():  # a new connection closed at once
            conn.release(False)
            raise NotSent("connection closed before the request was written")
        response = Response(conn, loop, idle_timeout, head_only=method == "HEAD")
        conn.response = response
        assert conn.transport is not None
        conn.transport.write(payload)
        try:
            await response.wait_head(deadline)
        except BaseException:
            response.close()
            raise
        response.head_seconds = loop.time() - started
        return response

    async def close(self) -> None:
        """Close every connection (idle or in use); later requests fail with ``NotSent``."""
        self._closed = True
        for conn in list(self._connections):
            conn.close_transport()
        self._idle.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(NotSent("connection pool closed"))

    async def _acquire(self, deadline: float) -> Connection:
        if self._closed:
            raise NotSent("connection pool closed")
        if not self._waiters:
            conn = self._idle_connection()
            if conn is not None:
                return conn
            if self._count < self._max:
                self._count += 1
                return await self._connect(deadline)
        waiter: asyncio.Future[Connection | None] = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                conn = await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._hand_on(waiter.result())  # handed a connection or a slot, too late: pass it on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise ConnectTimeout("no free connection to the upstream in time") from exc
            raise
        return conn if conn is not None else await self._connect(deadline)

    def _idle_connection(self) -> Connection | None:
        now = self._loop.time()
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.reusable() and now - conn.idle_since < self._idle_expiry:
                return conn
            if self._drop(conn):
                self._count -= 1
        return None

    async def _connect(self, deadline: float) -> Connection:
        """A new connection, its slot already counted (given back on failure)."""
        loop = self._loop
        try:
            async with asyncio.timeout_at(min(deadline, loop.time() + self._connect_timeout)):
                _, conn = await loop.create_connection(
                    lambda: Connection(self),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                )
        except TimeoutError as exc:
            self._free_slot()
            raise ConnectTimeout("no connection to the upstream in time") from exc
        except OSError as exc:  # refused, unresolvable, TLS failure (ssl.SSLError is an OSError)
            self._free_slot()
            raise NotSent(f"cannot connect to the upstream: {type(exc).__name__}") from exc
        except BaseException:
            self._free_slot()
            raise
        self._connections.add(conn)
        return conn

    def release(self, conn: Connection, keep: bool) -> None:
        if keep and conn.reusable() and not self._closed:
            conn.resume_reading()  # an idle connection must notice when the server closes it
            conn.idle_since = self._loop.time()
            self._hand_on(conn)
            return
        if self._drop(conn):
            self._free_slot()

    def lost_idle(self, conn: Connection) -> None:
        """An idle connection closed (by the server, or by us): forget it, its slot is free."""
        self._connections.discard(conn)
        if conn.counted:
            conn.counted = False
            if conn in self._idle:
                self._idle.remove(conn)
            self._free_slot()

    def _hand_on(self, conn: Connection | None) -> None:
        """A connection (or, with None, a slot) came free: to the first waiter, else idle (or counted down)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is None:
            self._count -= 1
        else:
            self._idle.append(conn)

    def _free_slot(self) -> None:
        self._hand_on(None)

    def _drop(self, conn: Connection) -> bool:
        """Close ``conn``; True when it still held a slot (now the caller's to free)."""
        counted, conn.counted = conn.counted, False
        conn.close_transport()
        self._connections.discard(conn)
        return counted


class ConnectionPools:
    """One ``Pool`` per origin, opened on first use; a URL maps to its pool, request target and ``Host``."""

    def __init__(
        self,
        *,
        max_connections: int,
        connect_timeout: float,
        idle_expiry: float = IDLE_EXPIRY,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``ssl_context``: for ``https`` origins (default: ``ssl.create_default_context()``, the system's CAs)."""
        self._max_connections = max_connections
        self._connect_timeout = connect_timeout
        self._idle_expiry = idle_expiry
        self._ssl_context = ssl_context
        self._pools: dict[tuple[str, str, int], Pool] = {}
        self._routes: dict[str, tuple[Pool, str, str]] = {}

    def route(self, url: str) -> tuple[Pool, str, str]:
        """``(pool, target, host)`` for an absolute ``http(s)://`` URL (the few in use are remembered)."""
        route = self._routes.get(url)
        if route is not None:
            return route
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an absolute http:// or https:// URL")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        origin = (parts.scheme, parts.hostname, port)
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = Pool(
                *origin,
                max_connections=self._max_connections,
                connect_timeout=self._connect_timeout,
                idle_expiry=self._idle_expiry,
                ssl_context=self._ssl_context,
            )
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if _UNSAFE_TARGET.search(target):
            target = quote(target, safe="!#$%&'()*+,/:;=?@[]~")
        route = (pool, target, parts.netloc.rpartition("@")[2])
        if len(self._routes) < _CACHED_ROUTES:
            self._routes[url] = route
        return route

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.close()


def serialize(method: str, target: str, host: str, headers: CIMultiDict[str], body: bytes | None) -> bytes:
    """The request head (and body) as one write; ``InvalidHeader`` for a field that would split the head."""
    fields = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    count = len(headers)
    if fields.count("\n") != count or fields.count("\r") != count or "\0" in fields or _unsafe(host):
        raise InvalidHeader(f"header {_culprit(host, headers)!r} contains CR, LF or NUL")
    if body is not None:
        fields += f"Content-Length: {len(body)}\r\n"
    elif method in _BODY_METHODS:
        fields += "Content-Length: 0\r\n"
    head = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n{fields}\r\n".encode("utf-8", "surrogateescape")
    return head + body if body else head


def _unsafe(text: str) -> bool:
    return "\r" in text or "\n" in text or "\0" in text


def _culprit(host: str, headers: CIMultiDict[str]) -> str:
    """The name of the offending field (never its value, which may be a credential)."""
    if _unsafe(host):
        return "Host"
    return next((name for name, value in headers.items() if _unsafe(name) or _unsafe(value)), "?")
