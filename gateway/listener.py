"""Accepting client connections, and surviving a process that has run out of file descriptors.

asyncio's own accept loop, when ``accept()`` fails with EMFILE, logs a traceback and schedules a retry *for every
pending connection* it tries in that round (up to the listen backlog), again every second: a gateway that ran out
of descriptors wrote 186 MB of log in 40 s and spun on retries. ``Listener`` stops accepting for
``ACCEPT_RETRY_DELAY`` instead, logs one line per interval at most, and resumes on its own when descriptors free up.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import socket
from collections.abc import Callable

from gateway.connections import QuietLog

RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_RETRY_DELAY = 1.0
"""Seconds between attempts to accept again after the process or system ran out of descriptors."""
ACCEPT_BATCH = 128
"""Connections accepted per readiness event at most, so one flood cannot starve the rest of the loop."""


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


class Listener(asyncio.AbstractServer):
    """Accepts on ``sock`` and hands each connection to a protocol from ``factory`` (what aiohttp's site holds)."""

    def __init__(
        self,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
        *,
        backlog: int,
        failures: QuietLog,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock: socket.socket | None = sock
        self._factory = factory
        self._failures = failures
        self._retry: asyncio.TimerHandle | None = None
        self._connecting: set[asyncio.Task[tuple[asyncio.Transport, asyncio.Protocol]]] = set()
        sock.listen(backlog)
        sock.setblocking(False)
        self._loop.add_reader(sock.fileno(), self._accept)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return () if self._sock is None else (self._sock,)

    def _accept(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _address = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in RESOURCE_ERRNOS:
                    self._failures.warning("accept() failed: %s", exc.strerror)
                    return
                self._failures.warning("cannot accept connections: %s; retrying every second", exc.strerror)
                self._loop.remove_reader(sock.fileno())
                self._retry = self._loop.call_later(ACCEPT_RETRY_DELAY, self._resume)
                return
            conn.setblocking(False)
            task = self._loop.create_task(self._loop.connect_accepted_socket(self._factory, conn))
            self._connecting.add(task)
            task.add_done_callback(functools.partial(self._connected, conn))

    def _connected(self, conn: socket.socket, task: asyncio.Task[tuple[asyncio.Transport, asyncio.Protocol]]) -> None:
        self._connecting.discard(task)
        if task.cancelled() or task.exception() is not None:
            conn.close()  # reset before the transport existed: nothing to serve

    def _resume(self) -> None:
        self._retry = None
        if self._sock is not None:
            self._loop.add_reader(self._sock.fileno(), self._accept)
            self._accept()

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._sock is not None

    async def start_serving(self) -> None:
        """Serving starts in the constructor."""

    async def serve_forever(self) -> None:
        raise NotImplementedError("the aiohttp runner owns the listener's lifetime")

    async def wait_closed(self) -> None:
        """Closing is immediate."""
