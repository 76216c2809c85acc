"""Run the example upstream (``python -m upstream_mcp``) as a real subprocess for tests.

Usage::

    async with run_upstream() as upstream:
        async with streamable_session_client(upstream.mcp_url) as client:
            ...

The process binds port 0; its ready line on stdout gives the port. stdout and stderr are drained
for the process's whole life (so a chatty server can never block on a full pipe) into a bounded
tail, which ``UpstreamProcess.output_tail()`` returns and which failures quote.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from upstream_mcp.server import MCP_PATH, MESSAGES_PATH, READY_LINE_PREFIX, SSE_PATH

REPO_ROOT = Path(__file__).resolve().parents[2]

STARTUP_TIMEOUT = 30.0
"""Seconds to wait for the ready line (a cold interpreter importing the SDK takes ~1-2 s)."""

SHUTDOWN_TIMEOUT = 10.0
"""Seconds to wait for exit after SIGTERM before SIGKILL (and again after SIGKILL)."""

_TAIL_LINES = 200


class UpstreamStartError(RuntimeError):
    """The upstream exited or stayed silent instead of printing its ready line."""


@dataclass
class UpstreamProcess:
    """A running ``upstream_mcp`` subprocess and the URLs of its transports."""

    process: asyncio.subprocess.Process
    base_url: str
    """``http://HOST:PORT`` exactly as the ready line printed it."""

    _tail: deque[str] = field(default_factory=lambda: deque(maxlen=_TAIL_LINES), repr=False)

    @property
    def mcp_url(self) -> str:
        """Streamable HTTP endpoint (session-based and stateless 2026-07-28)."""
        return f"{self.base_url}{MCP_PATH}"

    @property
    def sse_url(self) -> str:
        """Legacy HTTP+SSE endpoint (GET); its ``endpoint`` event names the messages URL."""
        return f"{self.base_url}{SSE_PATH}"

    @property
    def messages_url(self) -> str:
        """Legacy HTTP+SSE messages endpoint, without the ``session_id`` query the ``endpoint`` event adds."""
        return f"{self.base_url}{MESSAGES_PATH}"

    @property
    def host(self) -> str:
        """The host part of ``base_url`` (IPv6 in brackets)."""
        return self.base_url.removeprefix("http://").rpartition(":")[0]

    @property
    def port(self) -> int:
        """The TCP port the upstream bound."""
        return int(self.base_url.rpartition(":")[2])

    def output_tail(self) -> str:
        """The last lines the process wrote (stderr logs, and any stdout after the ready line)."""
        return "\n".join(self._tail)


async def _drain(stream: asyncio.StreamReader | None, tail: deque[str], prefix: str = "") -> None:
    if stream is None:
        return
    async for raw in stream:
        tail.append(prefix + raw.decode("utf-8", errors="replace").rstrip("\n"))


async def _stop(process: asyncio.subprocess.Process, timeout: float) -> None:
    """SIGTERM, wait up to ``timeout``; then SIGKILL and wait again."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout):
                await process.wait()
            return
        except TimeoutError:
            pass
    if process.returncode is None:
        process.kill()
        async with asyncio.timeout(timeout):
            await process.wait()


async def _finish(pumps: list[asyncio.Task[None]], timeout: float) -> None:
    """Let the output pumps reach EOF (bounded), cancelling stragglers; never leave a task pending."""
    if pumps:
        _done, pending = await asyncio.wait(pumps, timeout=timeout)
        for pump in pending:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


@asynccontextmanager
async def run_upstream(
    host: str = "127.0.0.1",
    *,
    extra_args: Sequence[str] = (),
    startup_timeout: float = STARTUP_TIMEOUT,
    shutdown_timeout: float = SHUTDOWN_TIMEOUT,
) -> AsyncIterator[UpstreamProcess]:
    """Start ``python -m upstream_mcp --host HOST --port 0 [extra_args]`` and yield it once it is ready.

    Readiness is the process's ready line, read with a ``startup_timeout`` bound; on timeout or an
    early exit this raises ``UpstreamStartError`` quoting the output tail. On exit the process gets
    SIGTERM and is awaited (SIGKILL after ``shutdown_timeout``) unless it has already exited, e.g.
    because the test signalled it; ``process.returncode`` is then set. ``extra_args`` go to the CLI
    (``--allowed-host``, ``--log-level DEBUG``, ``--access-log``...).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "upstream_mcp",
        "--host",
        host,
        "--port",
        "0",
        *extra_args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT,
        env=env,
    )
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    stderr_pump = asyncio.create_task(_drain(process.stderr, tail))
    stdout_pump: asyncio.Task[None] | None = None
    try:
        assert process.stdout is not None
        ready = b""
        timed_out = False
        try:
            async with asyncio.timeout(startup_timeout):
                ready = await process.stdout.readline()
        except TimeoutError:
            timed_out = True
        line = ready.decode("utf-8", errors="replace").strip()
        if not line.startswith(READY_LINE_PREFIX):
            await _stop(process, shutdown_timeout)
            await _finish([stderr_pump], shutdown_timeout)
            if timed_out:
                what = f"printed nothing within {startup_timeout:g}s"
            else:
                what = f"printed {line!r}" if line else "exited without printing"
            raise UpstreamStartError(
                f"upstream_mcp {what} instead of its ready line (exit status {process.returncode}); "
                "output tail:\n" + "\n".join(tail)
            )
        stdout_pump = asyncio.create_task(_drain(process.stdout, tail, prefix="stdout: "))
        yield UpstreamProcess(process=process, base_url=line.removeprefix(READY_LINE_PREFIX), _tail=tail)
    finally:
        try:
            await _stop(process, shutdown_timeout)
        finally:
            await _finish([pump for pump in (stderr_pump, stdout_pump) if pump is not None], shutdown_timeout)
