"""``mcp-gateway serve --workers N`` as a real process tree, and ways to reach one chosen worker.

Which worker answers a connection is the kernel's choice; a test makes it its own by stopping (SIGSTOP) every
other worker while the connection is accepted: ``only(pid)`` for a phase of fresh connections, ``pinned()`` for
one keep-alive connection per worker that then stays with that worker while all of them run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.support.replicas import drain, spawn_serve, until_ready

STARTUP_TIMEOUT = 60.0
"""Generous: the machine running the tests is shared and busy."""
STOP_TIMEOUT = 60.0


@dataclass
class Served:
    process: asyncio.subprocess.Process
    url: str
    ready_line: str
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=300))
    pump: asyncio.Task[None] | None = None

    @property
    def mcp_url(self) -> str:
        return f"{self.url}/mcp"

    def output(self) -> str:
        return "\n".join(self.tail)

    def worker_pids(self) -> set[int]:
        pid = self.process.pid
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return {int(child) for child in text.split()}

    async def until_workers(self, count: int, *, other_than: set[int] | None = None) -> set[int]:
        """The worker pids once there are ``count`` of them and none of ``other_than`` (bounded polling)."""
        async with asyncio.timeout(STARTUP_TIMEOUT):
            while True:
                pids = self.worker_pids()
                if len(pids) == count and not pids & (other_than or set()):
                    return pids
                await asyncio.sleep(0.05)  # polling a real process tree; the timeout bounds it

    @contextlib.contextmanager
    def only(self, pid: int) -> Iterator[None]:
        """Every other worker stopped (SIGSTOP) for the block: new connections can only go to ``pid``."""
        others = self.worker_pids() - {pid}
        for other in others:
            os.kill(other, signal.SIGSTOP)
        try:
            yield
        finally:
            for other in others:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(other, signal.SIGCONT)

    async def pinned(self, **session_args: Any) -> dict[int, aiohttp.ClientSession]:
        """One session per worker, each holding a single keep-alive connection accepted by that worker.

        Prefer it to ``only()`` around traffic: a worker stopped right after a response may be stopped inside a
        background write (SQLite's one writer), which would then hold up the others' writes."""
        sessions: dict[int, aiohttp.ClientSession] = {}
        for pid in sorted(self.worker_pids()):
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), **session_args)
            with self.only(pid):
                async with asyncio.timeout(STARTUP_TIMEOUT), session.get(f"{self.url}/healthz") as response:
                    await response.read()
            sessions[pid] = session
        return sessions

    async def stop(self, signo: int = signal.SIGTERM) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signo)
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await self.process.wait()
            except TimeoutError:
                for pid in self.worker_pids():
                    os.kill(pid, signal.SIGKILL)
                self.process.kill()
                await self.process.wait()
        if self.pump is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_TIMEOUT):
                    await self.pump
        assert self.process.returncode is not None
        return self.process.returncode


async def start_served(config_path: Path, port: int, *args: str) -> Served:
    process = await spawn_serve(config_path, port, *args)
    tail: deque[str] = deque(maxlen=300)
    try:
        line = await until_ready(process, tail, STARTUP_TIMEOUT)
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    assert process.stderr is not None
    served = Served(process, f"http://127.0.0.1:{port}", line, tail)
    served.pump = asyncio.create_task(drain(process.stderr, tail))
    return served


@contextlib.asynccontextmanager
async def served(config: Mapping[str, Any], tmp_path: Path, port: int, *args: str) -> AsyncIterator[Served]:
    path = tmp_path / f"serve-{port}.yaml"
    path.write_text(yaml.safe_dump(dict(config)))
    process = await start_served(path, port, *args)
    try:
        yield process
    finally:
        await process.stop()
