"""Migration 0008: an API key keeps its scopes on every backend; a key without scopes reads back as None."""

from __future__ import annotations

from dataclasses import replace

from gateway.storage import Storage
from tests.storage.test_conformance import add_user, make_key


async def test_an_api_keys_scopes_round_trip_and_a_key_without_scopes_has_none(storage: Storage):
    user = await add_user(storage)
    scoped = replace(make_key(user, name="agent"), scope="tools:read tools:math")
    plain = make_key(user, name="plain")
    await storage.create_api_key(scoped)
    await storage.create_api_key(plain)
    assert (await storage.get_api_key_by_hash(scoped.key_hash)) == scoped
    assert (await storage.get_api_key(plain.id)) == plain
    assert plain.scope is None
    assert {key.name: key.scope for key in await storage.list_api_keys(user.id)} == {
        "agent": "tools:read tools:math",
        "plain": None,
    }
