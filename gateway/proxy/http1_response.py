"""One HTTP/1.1 exchange on a pooled connection: the response head and body as they arrive (``gateway.proxy.http1``).

A ``Response`` is the ``httptools`` parser's callback object for the exchange: it collects the head (skipping
interim 1xx answers, refusing a 101 and a head over ``HEAD_LIMIT``), resolves the future the request waits on, and
buffers the body (chunked and close-delimited bodies are decoded by the parser) for ``readany``. It offers the part
of ``aiohttp.ClientResponse`` the gateway uses, so the relay code reads the same: ``status``, ``headers``,
``content_type``, ``content_length``, ``content.readany()``, ``content.set_exception()`` and ``close()``.

Flow control: reading from the connection pauses while more than ``HIGH_WATER`` bytes wait unread, and resumes
when ``readany`` takes the buffer. Each wait for a body chunk is bounded by the idle timeout, with a timer armed
only when a read has to wait (a read that finds data never touches a timer).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

if TYPE_CHECKING:
    from gateway.proxy.http1 import Connection

HEAD_LIMIT = 64 * 1024
"""Bytes of status line and header fields a response may have (more is a protocol error, not a long wait)."""
HIGH_WATER = 64 * 1024
"""Unread body bytes above which reading from the connection pauses."""
OCTET_STREAM = "application/octet-stream"
_EMPTY: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())


class ConnectionLost(Exception):
    """The connection closed after the request was written, before the response head: it may have been acted on."""


class NoAnswer(Exception):
    """No response head within the first-byte timeout after the request was written."""


class ProtocolError(Exception):
    """A malformed response, a head over ``HEAD_LIMIT``, or a ``101 Switching Protocols``."""


class BodyBroken(ConnectionError):
    """The body broke off (connection lost or malformed); an ``OSError``, as aiohttp's readers raise."""


class BodyTimeout(TimeoutError):
    """No body bytes within the idle timeout."""


class Response:
    """The answer to one request: headers received when the request returns it; ``close()`` when done."""

    __slots__ = (
        "_broken",
        "_buffer",
        "_buffered",
        "_complete",
        "_conn",
        "_exc",
        "_fields",
        "_head",
        "_head_bytes",
        "_head_fed",
        "_head_only",
        "_idle_timeout",
        "_keep_alive",
        "_loop",
        "_parser",
        "_timer",
        "_waiter",
        "content_length",
        "content_type",
        "head_seconds",
        "headers",
        "status",
    )

    def __init__(
        self, conn: Connection, loop: asyncio.AbstractEventLoop, idle_timeout: float | None, *, head_only: bool
    ) -> None:
        self.status = 0
        self.head_seconds = 0.0
        """Seconds from asking for a connection to the head's arrival (set by ``Pool.request``)."""
        self.headers = _EMPTY
        self.content_type = OCTET_STREAM
        self.content_length: int | None = None
        self._conn: Connection | None = conn
        self._loop = loop
        self._idle_timeout = idle_timeout
        self._head_only = head_only
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self._head: asyncio.Future[None] = loop.create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._fields: CIMultiDict[str] = CIMultiDict()
        self._head_bytes = 0
        """Bytes of the head's fields, counted by the parser's callbacks."""
        self._head_fed = 0
        """Bytes fed while the head is incomplete (a head that never ends is refused too)."""
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._complete = False
        self._keep_alive = False
        self._exc: BaseException | None = None
        """Set by ``set_exception``: raised by every read from now on, before any buffered data."""
        self._broken: BaseException | None = None
        """The body broke off: raised once the buffered data has been read."""
        self._waiter: asyncio.Future[None] | None = None

    @property
    def content(self) -> Response:
        """aiohttp's shape: the body is read through ``response.content`` (a property: an attribute holding the
        response itself would be a reference cycle, left to the garbage collector on every request)."""
        return self

    @property
    def has_data(self) -> bool:
        """Body bytes have arrived and wait to be read: ``readany`` returns them at once."""
        return bool(self._buffer)

    # The body, as ``aiohttp.StreamReader`` offers it.

    async def readany(self) -> bytes:
        """The bytes buffered so far, waiting for some when there are none; ``b""`` at the end of the body."""
        while True:
            if self._exc is not None:
                raise self._exc
            if self._buffer:
                buffer = self._buffer
                data = buffer[0] if len(buffer) == 1 else b"".join(buffer)
                buffer.clear()
                self._buffered = 0
                conn = self._conn
                if conn is not None and conn.paused:
                    conn.resume_reading()
                return data
            if self._broken is not None:
                raise self._broken
            if self._complete or self._conn is None:
                return b""
            await self._wait()

    async def _wait(self) -> None:
        waiter = self._waiter = self._loop.create_future()
        timer = None
        if self._idle_timeout is not None:
            timer = self._loop.call_at(self._loop.time() + self._idle_timeout, self._idle_expired)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def set_exception(self, exc: BaseException) -> None:
        """Wake a pending ``readany`` with ``exc``, and raise it from every later one (how a stream is ended)."""
        self._exc = exc
        self._wake()

    def close(self) -> None:
        """Done with the answer: its connection goes back to the pool only when the body was received to the end
        and the connection may be kept alive; otherwise it is closed, which cancels the upstream request."""
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        if self._timer is not None:
            self._timer.cancel()
        if not self._head.done():
            self._head.cancel()
        self._wake()
        conn.release(self._complete and self._keep_alive)
        # The parser holds this response's bound methods and this response holds the parser: break the cycle, so
        # the answer is freed at once by reference counting rather than left to the garbage collector.
        self._parser = None

    # Fed by the connection.

    def feed(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:  # closed: the connection no longer feeds it
            return
        try:
            parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(ProtocolError(f"malformed response: {exc}"))
            return
        if not self._head.done():
            self._head_fed += len(data)
            if self._head_fed > HEAD_LIMIT:
                self._fail(ProtocolError("response head too large"))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._complete:
            return
        if self.status and exc is None and self._close_delimited():
            self._complete = True  # the end of a body without a length or chunks (httptools cannot be told)
            self._wake()
            return
        self._keep_alive = False
        if not self._head.done():
            self._cancel_timer()
            self._head.set_exception(ConnectionLost("connection closed before the response head"))
        elif self._broken is None:
            self._broken = BodyBroken("connection lost before the end of the response body")
            self._broken.__cause__ = exc
            self._wake()

    def no_answer(self) -> None:
        """The first-byte timer: no head in time."""
        self._timer = None
        if not self._head.done():
            self._head.set_exception(NoAnswer("no response head in time"))
            self._abort()

    def wait_head(self, deadline: float) -> asyncio.Future[None]:
        """Arm the first-byte timer; the future resolves when the head has arrived."""
        self._timer = self._loop.call_at(deadline, self.no_answer)
        return self._head

    # httptools callbacks (never raise: a failure is recorded and the connection closed).

    def on_message_begin(self) -> None:
        if self._complete or self.status:  # bytes after the answer: the connection cannot be trusted
            self._keep_alive = False
            self._abort()
        elif self._fields:
            self._fields = CIMultiDict()  # a new head after an interim 1xx

    def on_status(self, status: bytes) -> None:
        self._head_bytes += len(status) + 15  # "HTTP/1.1 200 " and CRLF

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.status:
            return  # chunked trailers, or a second message: never merged into the headers
        self._head_bytes += len(name) + len(value) + 4
        self._fields.add(name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))

    def on_headers_complete(self) -> None:
        parser = self._parser
        if self.status or parser is None:  # (the parser calls this: it is there)
            return
        status = parser.get_status_code()
        if status < 200 and status != 101:
            return  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        if status == 101:
            self._fail(ProtocolError("the upstream switched protocols"))
            return
        if self._head_bytes > HEAD_LIMIT:
            self._fail(ProtocolError("response head too large"))
            return
        fields = self._fields
        self.status = status
        self.headers = CIMultiDictProxy(fields)
        content_type = fields.get("Content-Type")
        if content_type:
            self.content_type = content_type.split(";", 1)[0].strip().lower()
        length = fields.get("Content-Length")
        if length is not None and length.isdigit():
            self.content_length = int(length)
        self._cancel_timer()
        if self._head_only:  # the parser cannot be told the answer has no body: end here, never reuse
            self._complete = True
        if not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self._complete:
            return
        self._buffer.append(body)
        self._buffered += len(body)
        conn = self._conn
        if self._buffered > HIGH_WATER and conn is not None and not conn.paused:
            conn.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        parser = self._parser
        if not self.status or self._complete or parser is None:
            return  # the end of an interim answer (or of bytes after the answer)
        self._complete = True
        self._keep_alive = parser.should_keep_alive() and "close" not in self.headers.get("Connection", "").lower()
        self._wake()

    # Internals.

    def _close_delimited(self) -> bool:
        return "Content-Length" not in self.headers and "Transfer-Encoding" not in self.headers

    def _fail(self, error: Exception) -> None:
        self._keep_alive = False
        if not self._head.done():
            self._cancel_timer()
            self._head.set_exception(error)
        elif self._broken is None and not self._complete:
            self._broken = BodyBroken(str(error))
            self._wake()
        self._abort()

    def _abort(self) -> None:
        conn = self._conn
        if conn is not None:
            conn.close_transport()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _idle_expired(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(BodyTimeout("no response body bytes in time"))
