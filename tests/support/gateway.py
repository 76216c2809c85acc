"""Run a real gateway (the production runner, on a real socket) for tests."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from argon2 import PasswordHasher

from gateway.accounts import Accounts
from gateway.apikeys import ApiKeyFormat
from gateway.app import create_app
from gateway.clock import Clock, SystemClock
from gateway.config import GatewayConfig, parse_config
from gateway.passwords import Passwords
from gateway.server import serve
from gateway.storage import Storage
from gateway.storage.base import User

TEST_PASSWORD = "correct horse battery staple"
# Real argon2id, with cheap parameters so tests that create many users stay fast.
FAST_ARGON2 = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@dataclass
class GatewayHandle:
    url: str
    config: GatewayConfig
    app: web.Application
    storage: Storage
    accounts: Accounts
    _counter: list[int] = field(default_factory=lambda: [0])

    @property
    def mcp_url(self) -> str:
        return f"{self.url}/mcp"

    @property
    def sse_url(self) -> str:
        return f"{self.url}/mcp/sse"

    async def new_user(self, email: str | None = None) -> User:
        self._counter[0] += 1
        return await self.accounts.create_user(email or f"user{self._counter[0]}@example.com", TEST_PASSWORD)

    async def new_key(self, user: User, name: str = "test", expires_in: float | None = None) -> str:
        _, minted = await self.accounts.create_key(user, name=name, expires_in=expires_in)
        return minted.key


@contextlib.asynccontextmanager
async def running_gateway(
    *,
    storage: Storage,
    upstream_url: str,
    upstream_sse_url: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    clock: Clock | None = None,
    prepare: Callable[[web.Application], None] | None = None,
    sock: socket.socket | None = None,
) -> AsyncIterator[GatewayHandle]:
    """A gateway built by ``create_app`` and served by the production runner on a fresh loopback port (or on
    ``sock``, bound by a test that had to know the gateway's address first, see ``bound_loopback_socket``).

    ``prepare`` runs before the app starts (tests set collaborators, e.g. a failing store, through it)."""
    sock = sock or bound_loopback_socket()
    port = sock.getsockname()[1]
    raw: dict[str, Any] = {
        "public_url": f"http://127.0.0.1:{port}",
        "upstream": {"url": upstream_url, "sse_url": upstream_sse_url},
        "logging": {"access_log": False},
    }
    config = parse_config(_merge(raw, dict(overrides or {})))
    clock = clock or SystemClock()
    app = create_app(config, storage=storage, clock=clock)
    if prepare is not None:
        prepare(app)
    accounts = Accounts(
        users=storage,
        keys=storage,
        passwords=Passwords(hasher=FAST_ARGON2),
        key_format=ApiKeyFormat(config.api_keys.prefix, config.api_keys.format),
        clock=clock,
    )
    async with serve(app, "127.0.0.1", port, sock=sock) as running:
        yield GatewayHandle(url=running.url, config=config, app=app, storage=storage, accounts=accounts)


def bound_loopback_socket() -> socket.socket:
    """A TCP socket bound to a free loopback port (not listening yet)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


UNUSED_UPSTREAM = "http://127.0.0.1:9/mcp"
"""An upstream address nothing listens on, for gateways whose tests never reach the upstream."""
