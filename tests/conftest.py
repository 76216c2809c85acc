"""Shared fixtures: the real example upstream (one per test session) and real gateways in front of it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.clock import ManualClock
from gateway.storage import Storage, open_storage
from tests.support.databases import Backend
from tests.support.gateway import GatewayHandle, running_gateway
from tests.support.pgbouncer import Bouncer, running_pgbouncer
from tests.support.redis_cluster import RedisClusterNodes, running_redis_cluster
from tests.support.upstream import UpstreamProcess, run_upstream


@pytest.fixture(scope="session")
async def upstream() -> AsyncIterator[UpstreamProcess]:
    async with run_upstream() as process:
        yield process


@pytest.fixture(scope="session")
def pgbouncer() -> Iterator[Bouncer]:
    """Debian's PgBouncer in transaction pooling mode in front of the test PostgreSQL (one per session)."""
    with running_pgbouncer() as bouncer:
        yield bouncer


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterNodes]:
    """Three redis-server primaries joined in a Redis Cluster on loopback ports (one per session)."""
    with running_redis_cluster() as nodes:
        yield nodes


@pytest.fixture
async def sqlite_storage(tmp_path: Path) -> AsyncIterator[Storage]:
    storage = open_storage(f"sqlite:///{tmp_path / 'gateway.db'}")
    await storage.open()
    try:
        await storage.migrate()
        yield storage
    finally:
        await storage.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=time.time())


@pytest.fixture
async def gateway(
    sqlite_storage: Storage, upstream: UpstreamProcess, clock: ManualClock
) -> AsyncIterator[GatewayHandle]:
    """A gateway on SQLite in front of the real example upstream, on a clock the test moves."""
    async with running_gateway(
        storage=sqlite_storage, upstream_url=upstream.mcp_url, upstream_sse_url=upstream.sse_url, clock=clock
    ) as handle:
        yield handle


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def any_storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    """A migrated storage on each backend (a throwaway PostgreSQL schema for the second)."""
    db = Backend(request.param, tmp_path)
    await db.start()
    try:
        yield await db.storage()
    finally:
        await db.close()
