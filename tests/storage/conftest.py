"""Fixtures running the storage suite against every backend (see ``tests/support/databases.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.storage import Storage
from tests.support.databases import Backend
from tests.support.pgbouncer import Bouncer


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("pgbouncer", marks=pytest.mark.postgres),
    ]
)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Every backend; ``pgbouncer`` is PostgreSQL through PgBouncer in transaction pooling mode."""
    if request.param == "pgbouncer":
        bouncer: Bouncer = request.getfixturevalue("pgbouncer")
        db = Backend("pgbouncer", tmp_path, url=bouncer.url)
    else:
        db = Backend(request.param, tmp_path)
    await db.start()
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
async def storage(backend: Backend) -> Storage:
    """A migrated, opened storage on each backend."""
    return await backend.storage()
