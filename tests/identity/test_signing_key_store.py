"""The signing-key store contract, run against every backend: one current key, rotation in one transaction,
retired keys deleted only after their time, and racing replicas never ending up with two current keys."""

from __future__ import annotations

import asyncio
import json

from gateway.storage import Storage
from gateway.storage.identity import StoredSigningKey
from tests.support.databases import Backend

T0 = 1_800_000_000.0


def key(kid: str, created_at: float = T0) -> StoredSigningKey:
    return StoredSigningKey(kid, "ES256", json.dumps({"kid": kid}), "sealed", "k1", created_at)


async def test_the_first_key_is_stored_only_while_there_is_no_current_key(storage: Storage) -> None:
    assert await storage.list_signing_keys() == []
    assert await storage.add_signing_key(key("a"), now=T0, retire_current=False)
    assert not await storage.add_signing_key(key("b"), now=T0, retire_current=False)
    assert await storage.list_signing_keys() == [key("a")]


async def test_rotation_retires_the_current_key_at_that_time_and_stores_the_new_one_as_current(
    storage: Storage,
) -> None:
    await storage.add_signing_key(key("a"), now=T0, retire_current=False)
    assert await storage.add_signing_key(key("b", T0 + 10), now=T0 + 10, retire_current=True)
    rows = await storage.list_signing_keys()
    assert rows == [
        StoredSigningKey("a", "ES256", json.dumps({"kid": "a"}), "sealed", "k1", T0, T0 + 10),
        key("b", T0 + 10),
    ]
    assert [row.kid for row in rows if row.current] == ["b"]


async def test_only_keys_retired_before_the_cutoff_are_deleted_never_the_current_one(storage: Storage) -> None:
    await storage.add_signing_key(key("a"), now=T0, retire_current=False)
    await storage.add_signing_key(key("b", T0 + 10), now=T0 + 10, retire_current=True)
    await storage.add_signing_key(key("c", T0 + 20), now=T0 + 20, retire_current=True)
    assert await storage.delete_signing_keys(retired_before=T0 + 15) == 1
    assert [row.kid for row in await storage.list_signing_keys()] == ["b", "c"]
    assert await storage.delete_signing_keys(retired_before=T0 + 10_000) == 1
    assert [row.kid for row in await storage.list_signing_keys()] == ["c"]


async def test_replicas_racing_to_create_the_first_key_or_to_rotate_leave_exactly_one_current_key(
    backend: Backend,
) -> None:
    replicas = [await backend.storage(migrate=i == 0) for i in range(4)]
    first = await asyncio.gather(
        *(r.add_signing_key(key(f"first{i}"), now=T0, retire_current=False) for i, r in enumerate(replicas))
    )
    assert sum(first) == 1
    rotated = await asyncio.gather(
        *(r.add_signing_key(key(f"next{i}", T0 + 1), now=T0 + 1, retire_current=True) for i, r in enumerate(replicas))
    )
    assert sum(rotated) >= 1
    rows = await replicas[0].list_signing_keys()
    assert len([row for row in rows if row.current]) == 1
    assert all(row.retired_at is not None for row in rows if not row.current)
