"""The identity-link contract (accounts at third-party providers linked to gateway accounts), on every backend."""

from __future__ import annotations

import pytest

from gateway.storage import Conflict, Storage
from gateway.storage.identity_links import IdentityLink, PendingSignIn
from tests.storage.test_oauth_conformance import T0, add_user

ISSUER = "https://sso.example.com"


async def test_a_link_is_stored_and_found_by_provider_and_subject(storage: Storage) -> None:
    ada = await add_user(storage)
    link = IdentityLink(ISSUER, "sub-1", ada.id, "ada@example.com", T0, T0)
    await storage.add_identity_link(link)
    assert await storage.get_identity_link(ISSUER, "sub-1") == link
    assert await storage.get_identity_link(ISSUER, "SUB-1") is None
    assert await storage.get_identity_link("https://other.example.com", "sub-1") is None


async def test_a_provider_account_links_to_one_account_only(storage: Storage) -> None:
    ada, bob = await add_user(storage), await add_user(storage)
    await storage.add_identity_link(IdentityLink(ISSUER, "sub-1", ada.id, None, T0, T0))
    with pytest.raises(Conflict):
        await storage.add_identity_link(IdentityLink(ISSUER, "sub-1", bob.id, None, T0, T0))
    assert (await storage.get_identity_link(ISSUER, "sub-1")) == IdentityLink(ISSUER, "sub-1", ada.id, None, T0, T0)


async def test_touching_a_link_records_the_sign_in_and_keeps_the_email_when_none_is_given(storage: Storage) -> None:
    ada = await add_user(storage)
    await storage.add_identity_link(IdentityLink(ISSUER, "sub-1", ada.id, "old@example.com", T0, T0))
    assert await storage.touch_identity_link(ISSUER, "sub-1", email="new@example.com", now=T0 + 10)
    assert await storage.touch_identity_link(ISSUER, "sub-1", email=None, now=T0 + 5)
    assert await storage.get_identity_link(ISSUER, "sub-1") == IdentityLink(
        ISSUER, "sub-1", ada.id, "new@example.com", T0, T0 + 10
    )
    assert not await storage.touch_identity_link(ISSUER, "sub-missing", email=None, now=T0)


async def test_a_users_links_are_listed_oldest_first_and_go_with_the_user(storage: Storage) -> None:
    ada, bob = await add_user(storage), await add_user(storage)
    later = IdentityLink("https://github.com", "42", ada.id, "ada@example.com", T0 + 10, T0 + 10)
    first = IdentityLink(ISSUER, "sub-1", ada.id, "ada@example.com", T0, T0 + 20)
    await storage.add_identity_link(later)
    await storage.add_identity_link(first)
    await storage.add_identity_link(IdentityLink(ISSUER, "sub-2", bob.id, None, T0, T0))
    assert await storage.list_identity_links(ada.id) == [first, later]
    assert await storage.list_identity_links("usr_missing") == []


def pending(state_hash: str, created_at: float = T0) -> PendingSignIn:
    return PendingSignIn(
        state_hash, "b" * 64, "corp", "verifier", "nonce", "https://gw/auth/corp/callback", "/account", created_at
    )


async def test_a_pending_sign_in_is_taken_once(storage: Storage) -> None:
    await storage.add_pending_sign_in(pending("s1"), purge_before=T0 - 600)
    assert await storage.take_pending_sign_in("s1") == pending("s1")
    assert await storage.take_pending_sign_in("s1") is None
    assert await storage.take_pending_sign_in("s-missing") is None


async def test_adding_a_pending_sign_in_purges_the_abandoned_ones(storage: Storage) -> None:
    await storage.add_pending_sign_in(pending("old", T0), purge_before=T0 - 600)
    await storage.add_pending_sign_in(
        PendingSignIn("new", "b", "corp", None, None, "u", "tx:1", T0 + 700), purge_before=T0 + 100
    )
    assert await storage.take_pending_sign_in("old") is None
    taken = await storage.take_pending_sign_in("new")
    assert taken is not None
    assert (taken.code_verifier, taken.nonce, taken.return_to) == (None, None, "tx:1")
