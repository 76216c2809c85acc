"""Which account a provider sign-in lands in (``gateway.identity.linking.account_for``)."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from gateway.audit import AuditLog
from gateway.clock import ManualClock
from gateway.config import AccountsConfig
from gateway.identity.linking import AccountRefused, account_for
from gateway.identity.providers import ProviderIdentity
from gateway.storage import Storage

ISSUER = "https://sso.example.com"


def person(subject: str = "sub-1", email: str | None = "ada@example.com") -> ProviderIdentity:
    return ProviderIdentity("corp", ISSUER, subject, email, "Ada", {})


async def sign_in(
    storage: Storage,
    identity: ProviderIdentity,
    settings: AccountsConfig | None = None,
    clock: ManualClock | None = None,
) -> object:
    return await account_for(
        identity, store=storage, clock=clock or ManualClock(), settings=settings or AccountsConfig(), audit=AuditLog()
    )


async def test_a_first_sign_in_creates_an_account_without_a_password_and_links_it(sqlite_storage: Storage) -> None:
    user = await account_for(
        person(), store=sqlite_storage, clock=ManualClock(), settings=AccountsConfig(), audit=AuditLog()
    )
    assert user.email == "ada@example.com"
    assert user.password_hash == ""
    links = await sqlite_storage.list_identity_links(user.id)
    assert [(link.provider, link.subject, link.email) for link in links] == [(ISSUER, "sub-1", "ada@example.com")]


async def test_the_next_sign_in_finds_the_linked_account_even_when_the_email_changed(sqlite_storage: Storage) -> None:
    clock = ManualClock()
    first = await sign_in(sqlite_storage, person(), clock=clock)
    clock.advance(60)
    again = await sign_in(sqlite_storage, person(email="ada.lovelace@example.com"), clock=clock)
    assert again == first
    link = await sqlite_storage.get_identity_link(ISSUER, "sub-1")
    assert link is not None
    assert (link.email, link.last_used_at - link.linked_at) == ("ada.lovelace@example.com", 60)


async def test_a_verified_email_links_to_the_existing_account(sqlite_storage: Storage) -> None:
    existing = await sqlite_storage.create_user(user_id="usr_ada", email="Ada@Example.com", password_hash="x", now=1.0)
    user = await sign_in(sqlite_storage, person(email="ada@example.com"))
    assert user == existing


async def test_an_unverified_email_never_links_to_an_existing_account(sqlite_storage: Storage) -> None:
    await sqlite_storage.create_user(user_id="usr_ada", email="ada@example.com", password_hash="x", now=1.0)
    with pytest.raises(AccountRefused) as refused:
        await sign_in(sqlite_storage, person(email=None))
    assert refused.value.reason == "email_unverified"
    assert await sqlite_storage.get_identity_link(ISSUER, "sub-1") is None
    assert await sqlite_storage.list_identity_links("usr_ada") == []


async def test_an_email_outside_the_allowed_domains_is_refused_even_when_linked_before(
    sqlite_storage: Storage,
) -> None:
    await sign_in(sqlite_storage, person(email="ada@gmail.com"))
    narrowed = AccountsConfig(allowed_email_domains=("Example.com",))
    with pytest.raises(AccountRefused) as refused:
        await sign_in(sqlite_storage, person(email="ada@gmail.com"), narrowed)
    assert refused.value.reason == "domain_not_allowed"
    assert "example.com" in refused.value.description.lower()
    inside = await sign_in(sqlite_storage, person(subject="sub-2", email="bob@EXAMPLE.com"), narrowed)
    assert inside is not None
    with pytest.raises(AccountRefused):
        await sign_in(sqlite_storage, person(subject="sub-3", email="eve@sub.example.com"), narrowed)


async def test_with_signup_disabled_only_existing_accounts_sign_in(sqlite_storage: Storage) -> None:
    closed = AccountsConfig(signup_enabled=False)
    with pytest.raises(AccountRefused) as refused:
        await sign_in(sqlite_storage, person(), closed)
    assert refused.value.reason == "signup_disabled"
    assert await sqlite_storage.get_user_by_email("ada@example.com") is None
    await sqlite_storage.create_user(user_id="usr_ada", email="ada@example.com", password_hash="x", now=1.0)
    assert await sign_in(sqlite_storage, person(), closed) is not None


async def test_a_disabled_account_is_refused(sqlite_storage: Storage) -> None:
    user = await sign_in(sqlite_storage, person())
    assert isinstance(user, type(await sqlite_storage.get_user_by_email("ada@example.com")))
    found = await sqlite_storage.get_user_by_email("ada@example.com")
    assert found is not None
    await sqlite_storage.set_disabled(found.id, 5.0)
    with pytest.raises(AccountRefused) as refused:
        await sign_in(sqlite_storage, person())
    assert refused.value.reason == "account_disabled"


async def test_creating_and_linking_are_audited(sqlite_storage: Storage, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gateway.audit"):
        await sign_in(sqlite_storage, replace(person(), provider="corp"))
    assert [r.__dict__["audit"] for r in caplog.records] == ["user.created", "identity.linked"]
