"""Storage contract of the accounts people hold at third-party identity providers, linked to gateway accounts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class IdentityLink:
    """One account at a provider (``provider`` is its issuer, ``subject`` its user id there) and whose it is."""

    provider: str
    subject: str
    user_id: str
    email: str | None
    """The verified e-mail the provider gave at the last sign-in; None when it gave none."""
    linked_at: float
    last_used_at: float


class IdentityLinkStore(Protocol):
    async def add_identity_link(self, link: IdentityLink) -> None:
        """Store a new link; raises ``Conflict`` when (provider, subject) is already linked (to anyone)."""
        ...

    async def get_identity_link(self, provider: str, subject: str) -> IdentityLink | None:
        """The link of that provider account, or None when absent (exact, case-sensitive match)."""
        ...

    async def touch_identity_link(self, provider: str, subject: str, *, email: str | None, now: float) -> bool:
        """Record a sign-in: ``last_used_at`` = ``now`` and the e-mail it gave; False when the link is absent."""
        ...

    async def list_identity_links(self, user_id: str) -> list[IdentityLink]:
        """The user's links, oldest first (none for an unknown user)."""
        ...


@dataclass(frozen=True, slots=True)
class PendingSignIn:
    """A sign-in with a provider under way (``gateway.identity.providers.PendingAuthorization`` plus where the
    person continues), keyed by the SHA-256 of its ``state`` and bound to the browser that started it."""

    state_hash: str
    browser_hash: str
    provider: str
    code_verifier: str | None
    nonce: str | None
    redirect_uri: str
    return_to: str
    created_at: float


class PendingSignInStore(Protocol):
    async def add_pending_sign_in(self, pending: PendingSignIn, *, purge_before: float) -> None:
        """Store ``pending``, deleting the sign-ins created before ``purge_before`` (abandoned) on the way."""
        ...

    async def take_pending_sign_in(self, state_hash: str) -> PendingSignIn | None:
        """Delete and return the sign-in with that state hash: a second take (a replayed callback) finds None."""
        ...
