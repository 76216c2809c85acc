"""The refresh coordinator on its own (a scripted token endpoint, a real SQLite vault): concurrent callers share
one refresh; a transient failure leaves the connection usable; ``invalid_grant`` marks it broken."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from gateway.clock import ManualClock
from gateway.identity.sealing import EncryptionKeys, generate_secret
from gateway.storage.sqlite import SqliteStorage
from gateway.vault.refresh import RefreshRefused, RefreshUnavailable, TokenEndpoint
from gateway.vault.singleflight import LocalLock, RefreshCoordinator
from gateway.vault.vault import BROKEN, CONNECTED, Connection, Vault


class ScriptedEndpoint:
    def __init__(self, outcome: Exception | None = None) -> None:
        self.calls: list[str] = []
        self.outcome = outcome
        self.release = asyncio.Event()

    async def refresh(self, refresh_token: str) -> Mapping[str, Any]:
        self.calls.append(refresh_token)
        await self.release.wait()
        if self.outcome is not None:
            raise self.outcome
        return {"access_token": f"a{len(self.calls) + 1}", "refresh_token": f"r{len(self.calls) + 1}", "expires_in": 60}


@pytest.fixture
async def vault(tmp_path: Path) -> AsyncIterator[Vault]:
    storage = SqliteStorage(tmp_path / "gw.db")
    await storage.open()
    await storage.migrate()
    await storage.create_user(user_id="u", email="u@example.com", password_hash="x", now=1.0)
    yield Vault(storage, EncryptionKeys.parse(generate_secret("k1")), ManualClock(1000.0))
    await storage.close()


async def seeded(vault: Vault) -> Connection:
    return await vault.save_connection(
        "u", "corp", access_token="a1", refresh_token="r1", expires_in=5, scopes=(), provider_account_id="u"
    )


def coordinator(vault: Vault, endpoint: TokenEndpoint, outcomes: list[str]) -> RefreshCoordinator:
    return RefreshCoordinator(
        vault, lambda _service: endpoint, LocalLock(), lambda: 1000.0, on_refresh=lambda _u, _s, o: outcomes.append(o)
    )


async def test_concurrent_callers_share_one_refresh_and_its_result(vault: Vault) -> None:
    endpoint, outcomes = ScriptedEndpoint(), list[str]()
    seen = await seeded(vault)
    refresher = coordinator(vault, endpoint, outcomes)
    endpoint.release.set()
    results = await asyncio.gather(*(refresher.fresh(seen) for _ in range(8)))
    assert endpoint.calls == ["r1"]
    assert {r.tokens.access_token for r in results} == {"a2"}
    assert outcomes == ["ok"]


async def test_a_transient_failure_is_reported_and_leaves_the_connection_usable(vault: Vault) -> None:
    endpoint, outcomes = ScriptedEndpoint(RefreshUnavailable("HTTP 503")), list[str]()
    endpoint.release.set()
    seen = await seeded(vault)
    with pytest.raises(RefreshUnavailable):
        await coordinator(vault, endpoint, outcomes).fresh(seen)
    current = await vault.connection("u", "corp")
    assert current is not None
    assert (current.status, current.tokens.refresh_token) == (CONNECTED, "r1")
    assert outcomes == ["failed"]


async def test_invalid_grant_marks_the_connection_broken(vault: Vault) -> None:
    endpoint, outcomes = ScriptedEndpoint(RefreshRefused("invalid_grant")), list[str]()
    endpoint.release.set()
    seen = await seeded(vault)
    result = await coordinator(vault, endpoint, outcomes).fresh(seen)
    assert result.status == BROKEN
    assert outcomes == ["refused"]
