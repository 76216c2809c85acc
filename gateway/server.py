"""Serving an app: the runner settings every deployment and every test uses."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from gateway.appkeys import CONFIG
from gateway.logs import AccessLogger


@dataclass(frozen=True)
class Running:
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@contextlib.asynccontextmanager
async def serve(
    app: web.Application, host: str, port: int, *, sock: socket.socket | None = None
) -> AsyncIterator[Running]:
    """Start listening (on ``sock`` when given); on exit drain in-flight requests, then clean up."""
    config = app[CONFIG]
    runner = web.AppRunner(
        app,
        handler_cancellation=True,  # a client that goes away cancels its upstream request
        access_log_class=AccessLogger,
        access_log=logging.getLogger("gateway.access") if config.logging.access_log else None,
        shutdown_timeout=config.server.shutdown_timeout,
        max_field_size=config.limits.max_header_bytes,
        max_line_size=config.limits.max_header_bytes,
    )
    await runner.setup()
    try:
        site: web.BaseSite = web.SockSite(runner, sock) if sock is not None else web.TCPSite(runner, host, port)
        await site.start()
        bound_port = int(runner.addresses[0][1]) if runner.addresses else port
        yield Running(runner=runner, host=host, port=bound_port)
    finally:
        await runner.cleanup()
