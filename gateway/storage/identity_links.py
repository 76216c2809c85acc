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
