"""Which gateway account a person signing in with an identity provider is.

``account_for`` decides, in this order:

1. ``accounts.allowed_email_domains`` (when set): the provider must vouch for an e-mail in one of the domains, at
   every sign-in, so narrowing the list shuts out accounts linked before;
2. the account already linked to the provider account (issuer, subject);
3. otherwise an existing account with the same e-mail, only when the provider says the e-mail is verified (a
   provider that lets anyone claim ``ceo@company.example`` unverified must not hand out the CEO's account);
4. otherwise a new account (no password: it signs in with the provider), unless ``accounts.signup_enabled`` is off.

Anything else raises ``AccountRefused``, whose ``description`` is safe to show on a page.
"""

from __future__ import annotations

from typing import Protocol

from gateway.accounts import AccountError, normalise_email
from gateway.audit import AuditLog
from gateway.clock import Clock
from gateway.config import AccountsConfig
from gateway.identity.providers import ProviderIdentity
from gateway.secrets_hashing import new_id
from gateway.storage.base import Conflict, User, UserStore
from gateway.storage.identity_links import IdentityLink, IdentityLinkStore

NO_PASSWORD = ""
"""The password hash of an account created by a provider sign-in: it matches no password (no argon2 prefix)."""


class LinkingStore(IdentityLinkStore, UserStore, Protocol):
    """What ``account_for`` needs from storage (every backend is one)."""


class AccountRefused(Exception):
    """The provider signed the person in, but the gateway does not let them in; ``description`` is safe to show."""

    def __init__(self, reason: str, description: str) -> None:
        super().__init__(f"{reason}: {description}")
        self.reason = reason
        """``email_unverified``, ``domain_not_allowed``, ``signup_disabled`` or ``account_disabled``."""
        self.description = description


def email_domain_allowed(email: str, allowed: tuple[str, ...]) -> bool:
    """True when ``allowed`` is empty or names the e-mail's domain exactly (any case)."""
    if not allowed:
        return True
    domain = email.rsplit("@", 1)[-1].lower()
    return domain in {d.strip().lstrip("@").lower() for d in allowed}


async def account_for(
    identity: ProviderIdentity, *, store: LinkingStore, clock: Clock, settings: AccountsConfig, audit: AuditLog
) -> User:
    """The account ``identity`` signs in to, linked or created as the module says; raises ``AccountRefused``."""
    email = _verified_email(identity)
    if settings.allowed_email_domains and (
        email is None or not email_domain_allowed(email, settings.allowed_email_domains)
    ):
        raise AccountRefused(
            "domain_not_allowed",
            "This gateway is only for e-mail addresses of "
            + ", ".join(sorted(settings.allowed_email_domains))
            + (
                f"; {identity.provider} signed you in as {email}."
                if email
                else "; your provider gave no verified e-mail."
            ),
        )
    now = clock.now()
    link = await store.get_identity_link(identity.issuer, identity.subject)
    if link is not None:
        linked = await _active(store, link.user_id)
        await store.touch_identity_link(identity.issuer, identity.subject, email=email, now=now)
        return linked
    if email is None:
        raise AccountRefused(
            "email_unverified",
            f"{identity.provider} did not confirm your e-mail address, so it cannot be linked to an account here. "
            "Verify your e-mail address with the provider, then try again.",
        )
    created = False
    user = await store.get_user_by_email(email)
    if user is None:
        if not settings.signup_enabled:
            raise AccountRefused(
                "signup_disabled", f"There is no account for {email} here, and new accounts are not open."
            )
        user, created = await _create(store, email, now)
    if not user.active:
        raise _disabled()
    try:
        await store.add_identity_link(IdentityLink(identity.issuer, identity.subject, user.id, email, now, now))
    except Conflict:
        # Another sign-in of the same provider account linked it first: use what it linked.
        link = await store.get_identity_link(identity.issuer, identity.subject)
        if link is None:
            raise
        return await _active(store, link.user_id)
    if created:
        audit.record("user.created", actor=user.id, user_id=user.id, provider=identity.provider)
    audit.record("identity.linked", actor=user.id, user_id=user.id, provider=identity.provider, issuer=identity.issuer)
    return user


def _verified_email(identity: ProviderIdentity) -> str | None:
    """The provider's verified e-mail in the gateway's normal form; None when absent or unusable."""
    if identity.email is None:
        return None
    try:
        return normalise_email(identity.email)
    except AccountError:
        return None


async def _active(store: LinkingStore, user_id: str) -> User:
    user = await store.get_user(user_id)
    if user is None or not user.active:
        raise _disabled()
    return user


async def _create(store: LinkingStore, email: str, now: float) -> tuple[User, bool]:
    try:
        return await store.create_user(user_id=new_id("usr"), email=email, password_hash=NO_PASSWORD, now=now), True
    except Conflict:
        # The same e-mail signed up at the same moment (a password sign-up or another replica): link to it.
        user = await store.get_user_by_email(email)
        if user is None:
            raise
        return user, False


def _disabled() -> AccountRefused:
    return AccountRefused("account_disabled", "This account is disabled. Ask the gateway's administrator.")
