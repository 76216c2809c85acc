"""Several gateway replicas as separate processes (``python -m gateway serve``), as production runs them.

They share one throwaway PostgreSQL schema (``storage.schema``), one Redis with a per-test revocation channel
and quota key prefix, and one ``public_url`` (the first replica's address stands for the load balancer, so a
token issued by any replica is valid on all). The test gets a ``Storage`` on the same schema to create accounts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import sys
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from redis.asyncio import Redis

from gateway.accounts import Accounts
from gateway.apikeys import ApiKeyFormat
from gateway.clock import SystemClock
from gateway.passwords import Passwords
from gateway.storage import Storage
from gateway.storage.base import User
from tests.support.databases import POSTGRES_URL, Backend
from tests.support.gateway import FAST_ARGON2, TEST_PASSWORD
from tests.support.upstream import REPO_ROOT

REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
READY_PREFIX = "mcp-gateway listening on "


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Replica:
    name: str
    url: str
    process: asyncio.subprocess.Process
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=200))
    pump: asyncio.Task[None] | None = None

    @property
    def mcp_url(self) -> str:
        return f"{self.url}/mcp"

    @property
    def sse_url(self) -> str:
        return f"{self.url}/mcp/sse"

    def output(self) -> str:
        return "\n".join(self.tail)

    async def stop(self) -> None:
        """SIGTERM (a graceful shutdown), SIGKILL if it does not exit in time."""
        if self.process.returncode is None:
            self.process.terminate()
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self.pump is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_TIMEOUT):
                    await self.pump


@dataclass
class Fleet:
    replicas: list[Replica]
    public_url: str
    storage: Storage
    config: dict[str, Any]
    """The configuration every replica shares (``redis.url`` may differ per replica)."""
    config_path: Path
    _users: list[int] = field(default_factory=lambda: [0])

    def __getitem__(self, index: int) -> Replica:
        return self.replicas[index]

    @property
    def accounts(self) -> Accounts:
        return Accounts(
            users=self.storage,
            keys=self.storage,
            passwords=Passwords(hasher=FAST_ARGON2),
            key_format=ApiKeyFormat(self.config.get("api_keys", {}).get("prefix", "mgw")),
            clock=SystemClock(),
        )

    async def new_user(self, email: str | None = None) -> User:
        self._users[0] += 1
        return await self.accounts.create_user(email or f"fleet{self._users[0]}@example.com", TEST_PASSWORD)

    async def new_key(self, user: User, name: str = "fleet") -> tuple[str, str]:
        """A new API key of ``user``: (its id, the key)."""
        row, minted = await self.accounts.create_key(user, name=name, expires_in=None)
        return row.id, minted.key

    async def cli(self, *args: str) -> tuple[int, str]:
        """Run ``mcp-gateway ARGS --config <the fleet's config>``: (exit status, stderr)."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            *args,
            "--config",
            str(self.config_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            cwd=REPO_ROOT,
        )
        async with asyncio.timeout(60):
            _, err = await process.communicate()
        return process.returncode or 0, err.decode()


async def spawn_serve(config_path: Path, port: int, *args: str) -> asyncio.subprocess.Process:
    """``python -m gateway serve`` on ``127.0.0.1:port`` with this configuration (stderr piped, for its ready line)."""
    return await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "gateway", "serve", "--config", str(config_path)),
        *("--host", "127.0.0.1", "--port", str(port), *args),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def until_ready(process: asyncio.subprocess.Process, tail: deque[str], timeout: float = STARTUP_TIMEOUT) -> str:
    """Read the server's stderr (into ``tail``) until its ready line, which is returned; an exit before it, or no
    ready line within ``timeout``, raises with what it said."""
    assert process.stderr is not None
    async with asyncio.timeout(timeout):
        while True:
            raw = await process.stderr.readline()
            if not raw:
                await process.wait()
                raise RuntimeError(f"serve exited at start ({process.returncode}):\n" + "\n".join(tail))
            line = raw.decode("utf-8", "replace").rstrip("\n")
            tail.append(line)
            if line.startswith(READY_PREFIX):
                return line


async def start_replica(name: str, config_path: Path, port: int) -> Replica:
    process = await spawn_serve(config_path, port)
    replica = Replica(name, f"http://127.0.0.1:{port}", process)
    try:
        await until_ready(process, replica.tail)
    except BaseException:
        await replica.stop()
        raise
    assert process.stderr is not None
    replica.pump = asyncio.create_task(drain(process.stderr, replica.tail))
    return replica


async def drain(stream: asyncio.StreamReader, tail: deque[str]) -> None:
    async for raw in stream:
        tail.append(raw.decode("utf-8", "replace").rstrip("\n"))


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@contextlib.asynccontextmanager
async def replica_fleet(
    tmp_path: Path,
    *,
    upstream_url: str,
    upstream_sse_url: str | None = None,
    count: int = 3,
    redis_urls: Sequence[str | None] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> AsyncIterator[Fleet]:
    """``count`` replicas on one fresh schema; ``redis_urls[i]`` (default: the test Redis) for replica ``i``."""
    db = Backend("postgres", tmp_path)
    await db.start()
    ports = [free_port() for _ in range(count)]
    public_url = f"http://127.0.0.1:{ports[0]}"
    tag = secrets.token_hex(6)
    shared: dict[str, Any] = _merge(
        {
            "public_url": public_url,
            "upstream": {"url": upstream_url, "sse_url": upstream_sse_url},
            "storage": {"url": POSTGRES_URL, "schema": db.schema, "pool_max": 4},
            "redis": {"url": REDIS_URL, "revocation_channel": f"gwt{tag}:revocations"},
            "quota": {"key_prefix": f"gwt{tag}:q", "default_plan": "unlimited"},
            "logging": {"access_log": False, "level": "WARNING"},
        },
        overrides or {},
    )
    replicas: list[Replica] = []
    try:
        storage = await db.storage()
        paths: list[Path] = []
        for i in range(count):
            config = shared
            if redis_urls is not None:
                config = _merge(shared, {"redis": {"url": redis_urls[i]}})
            path = tmp_path / f"replica{i}.yaml"
            path.write_text(yaml.safe_dump(config))
            paths.append(path)
        started = await asyncio.gather(
            *(start_replica("ABC"[i] if i < 3 else str(i), paths[i], ports[i]) for i in range(count)),
            return_exceptions=True,
        )
        replicas = [r for r in started if isinstance(r, Replica)]
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome
        shared_path = tmp_path / "fleet.yaml"
        shared_path.write_text(yaml.safe_dump(shared))
        yield Fleet(replicas, public_url, storage, shared, shared_path)
    finally:
        await asyncio.gather(*(r.stop() for r in replicas), return_exceptions=True)
        await db.close()
        await delete_keys(f"gwt{tag}:*")


async def delete_keys(pattern: str) -> None:
    """Remove one test's keys from the shared Redis (only its own prefix; never a flush)."""
    client = Redis.from_url(REDIS_URL, socket_timeout=5, socket_connect_timeout=5)
    try:
        keys = [key async for key in client.scan_iter(match=pattern, count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
