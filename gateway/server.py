"""Serving an app: the runner settings every deployment and every test uses."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import resource
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.appkeys import CONFIG
from gateway.config import GatewayConfig
from gateway.connections import (
    QUIET_LOG_INTERVAL,
    ConnectionLimits,
    ConnectionTable,
    QuietLog,
    protocol_factory,
)
from gateway.connections import log as connections_log
from gateway.listener import Listener, listening_socket
from gateway.logs import AccessLogger

LISTEN_BACKLOG = 1024
"""Connections the kernel holds for ``accept()``: room for a burst, so a new client's SYN is not dropped while
the gateway works through a flood (the kernel caps it at ``net.core.somaxconn``)."""
FD_RESERVE = 64
"""Descriptors kept free beyond the upstream and storage pools: listening sockets, Redis, logs, files."""


@dataclass(frozen=True)
class Running:
    runner: web.AppRunner
    host: str
    port: int
    connections: ConnectionTable

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def connection_limits(config: GatewayConfig, open_files: int | None = None) -> ConnectionLimits:
    """The configured limits; an automatic ``max_connections`` leaves room for the gateway's own descriptors."""
    server = config.server
    maximum = server.max_connections
    if not maximum:
        if open_files is None:
            open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        reserve = config.upstream.max_connections + config.storage.pool_max + FD_RESERVE
        maximum = max(open_files - reserve, 16) if open_files != resource.RLIM_INFINITY else 65536
    return ConnectionLimits(
        header_timeout=server.header_timeout,
        body_timeout=server.body_timeout,
        max_connections=maximum,
        max_per_address=server.max_connections_per_address,
        uncapped_peers=frozenset(config.security.trusted_proxies),
    )


class GuardedSite(web.BaseSite):
    """A listening socket whose connections are ``GuardedRequestHandler``s, accepted by a ``Listener``."""

    __slots__ = ("_factory", "_failures", "_host", "_port", "_sock")

    def __init__(
        self,
        runner: web.AppRunner,
        factory: Callable[[], asyncio.Protocol],
        failures: QuietLog,
        host: str,
        port: int,
        sock: socket.socket | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(runner, **kwargs)
        self._factory, self._failures = factory, failures
        self._host, self._port, self._sock = host, port, sock

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        sock = self._sock if self._sock is not None else listening_socket(self._host, self._port)
        self._server = Listener(sock, self._factory, backlog=self._backlog, failures=self._failures)


GC_YOUNG_THRESHOLD = 7000
"""Net allocations between two collections of the youngest generation (CPython's default is 700)."""


def settle_heap() -> None:
    """Once serving: what exists now (modules, configuration, the app and its caches) lives as long as the process,
    so move it out of the garbage collector's reach (``gc.freeze``), and collect the young generation less often.

    A request leaves no reference cycles behind (``bench/README.md`` says how that was checked), so the collector
    finds nearly nothing; measured under load, it had cost about 4 % of the CPU (full collections of ~30 ms each
    over the whole heap, and a young collection every ~8 requests), and about 0.2 % after this."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


@contextlib.asynccontextmanager
async def serve(
    app: web.Application, host: str, port: int, *, sock: socket.socket | None = None
) -> AsyncIterator[Running]:
    """Start listening (on ``sock`` when given); on exit drain in-flight requests, then clean up."""
    config = app[CONFIG]
    handler_args: dict[str, Any] = {
        "access_log_class": AccessLogger,
        "access_log": logging.getLogger("gateway.access") if config.logging.access_log else None,
        "max_field_size": config.limits.max_header_bytes,
        "max_line_size": config.limits.max_header_bytes,
        "keepalive_timeout": config.server.keepalive_timeout,
    }
    runner = web.AppRunner(
        app,
        handler_cancellation=True,  # a client that goes away cancels its upstream request
        shutdown_timeout=config.server.shutdown_timeout,
        **handler_args,
    )
    await runner.setup()
    loop = asyncio.get_running_loop()
    table = ConnectionTable(connection_limits(config), QuietLog(connections_log, QUIET_LOG_INTERVAL, loop.time))
    assert runner.server is not None
    factory = protocol_factory(runner.server, table, handler_args)
    failures = QuietLog(connections_log, QUIET_LOG_INTERVAL, loop.time)
    try:
        site = GuardedSite(runner, factory, failures, host, port, sock, backlog=LISTEN_BACKLOG)
        await site.start()
        bound_port = int(runner.addresses[0][1]) if runner.addresses else port
        yield Running(runner=runner, host=host, port=bound_port, connections=table)
    finally:
        await runner.cleanup()
