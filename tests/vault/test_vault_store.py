"""The vault's store on every backend: tokens sealed (never in clear), compare-and-set on the version, a moved or
foreign blob refused; ``mcp-gateway vault rotate-key`` re-seals every row under the first key."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.clock import ManualClock
from gateway.identity.sealing import EncryptionKeys, generate_secret
from gateway.storage import Storage
from gateway.vault.vault import BROKEN, ProviderTokens, Vault, VaultLocked
from tests.storage.conftest import backend, storage

__all__ = ["backend", "storage"]

K1, K2 = generate_secret("k1"), generate_secret("k2")


async def a_user(storage: Storage, user_id: str = "u1") -> str:
    await storage.create_user(user_id=user_id, email=f"{user_id}@example.com", password_hash="x", now=1.0)
    return user_id


async def test_a_saved_connection_reads_back_and_its_tokens_are_sealed(storage: Storage) -> None:
    vault = Vault(storage, EncryptionKeys.parse(K1), ManualClock(1000.0))
    user = await a_user(storage)
    saved = await vault.save_connection(
        user, "corp", access_token="AT-secret", refresh_token="RT-secret", expires_in=60, scopes=("a", "b"),
        provider_account_id="alice", provider_email="alice@example.com",
    )  # fmt: skip
    assert saved.tokens == ProviderTokens("AT-secret", "RT-secret", 1060.0, ("a", "b"))
    assert "secret" not in repr(saved)
    [row] = await storage.list_connections(user)
    assert "AT-secret" not in row.sealed_tokens
    assert "RT-secret" not in row.sealed_tokens
    assert (row.encryption_key_id, row.provider_account_id, row.version) == ("k1", "alice", 1)
    assert await vault.connection(user, "other") is None


async def test_a_refresh_writes_only_over_the_version_it_read(storage: Storage) -> None:
    vault = Vault(storage, EncryptionKeys.parse(K1), ManualClock(1000.0))
    user = await a_user(storage)
    seen = await vault.save_connection(
        user, "corp", access_token="a1", refresh_token="r1", expires_in=60, scopes=(), provider_account_id="x"
    )
    new = ProviderTokens("a2", "r2", 2000.0, ())
    assert await vault.store_refreshed(seen, new) is True
    assert await vault.store_refreshed(seen, ProviderTokens("a3", "r3", 3000.0, ())) is False  # fenced off
    current = await vault.connection(user, "corp")
    assert current is not None
    assert current.tokens == new
    assert current.version == 2
    assert await vault.mark_broken(current) is True
    assert (await vault.connection(user, "corp")).status == BROKEN  # type: ignore[union-attr]


async def test_a_blob_moved_to_another_row_or_under_an_unknown_key_is_refused(storage: Storage) -> None:
    failures: list[str] = []
    vault = Vault(storage, EncryptionKeys.parse(K1), ManualClock(1000.0), on_unseal_failure=failures.append)
    alice, bob = await a_user(storage, "alice"), await a_user(storage, "bob")
    await vault.save_connection(alice, "corp", access_token="a", refresh_token="r", expires_in=None, scopes=(),
                                provider_account_id="alice")  # fmt: skip
    [row] = await storage.list_connections(alice)
    await storage.put_connection(replace(row, user_id=bob))
    with pytest.raises(VaultLocked):
        await vault.connection(bob, "corp")
    with pytest.raises(VaultLocked):
        await Vault(storage, EncryptionKeys.parse(K2), ManualClock(1000.0)).connection(alice, "corp")
    assert failures == ["corp"]


def test_rotate_key_reseals_every_row_under_the_first_key(tmp_path: Path) -> None:
    import asyncio

    from gateway.storage.sqlite import SqliteStorage

    async def seed() -> None:
        db = SqliteStorage(tmp_path / "gw.db")
        await db.open()
        await db.migrate()
        vault = Vault(db, EncryptionKeys.parse(K1), ManualClock(1000.0))
        for user in ("u1", "u2"):
            await a_user(db, user)
            await vault.save_connection(user, "corp", access_token=f"a-{user}", refresh_token="r", expires_in=60,
                                        scopes=(), provider_account_id=user)  # fmt: skip
        await db.close()

    async def check() -> list[str]:
        db = SqliteStorage(tmp_path / "gw.db")
        await db.open()
        vault = Vault(db, EncryptionKeys.parse(K2), ManualClock(1000.0))  # the old key is gone
        opened = [await vault.connection(u, "corp") for u in ("u1", "u2")]
        ids = [row.encryption_key_id for row in await db.list_connections()]
        await db.close()
        assert [c.tokens.access_token for c in opened if c is not None] == ["a-u1", "a-u2"]
        return ids

    asyncio.run(seed())
    config = tmp_path / "gateway.yaml"
    config.write_text(f"storage:\n  url: sqlite:///{tmp_path / 'gw.db'}\nidentity:\n  encryption_keys: ${{KEYS}}\n")
    env = {**{k: v for k, v in os.environ.items() if k != "MCP_GATEWAY_CONFIG"}, "KEYS": f"{K2},{K1}"}
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "vault", "rotate-key", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "re-encrypted 2 vault row(s) under encryption key k2" in result.stdout
    assert asyncio.run(check()) == ["k2", "k2"]
