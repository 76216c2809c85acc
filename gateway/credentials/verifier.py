"""The one seam a credential type implements: recognise its credentials by shape, refuse malformed ones before any
lookup, verify the rest, and record their use. ``Authenticator`` asks each registered verifier in turn."""

from __future__ import annotations

from typing import Protocol

from gateway.credentials.extract import Presented
from gateway.credentials.principal import Principal, Refusal, Verified


class CredentialVerifier(Protocol):
    @property
    def kind(self) -> str:
        """A short name for logs and the registry (``api_key``, ``oauth``)."""
        ...

    def matches(self, raw: str) -> bool:
        """Whether ``raw`` claims to be a credential of this type (by its shape alone, no lookup). The first
        verifier of the list that matches owns the credential."""
        ...

    def refuse_early(self, presented: Presented) -> Refusal | None:
        """Refuse, before any lookup, a credential of this type that is malformed or in the wrong header."""
        ...

    async def verify(self, presented: Presented) -> Verified | Refusal:
        """Check the credential against its source of truth. Raises ``StorageUnavailable`` when that cannot say.
        The result is cached by the authenticator (keyed by ``presented.digest``) for at most a second."""
        ...

    def record_use(self, principal: Principal, now: float) -> None:
        """Note that ``principal``'s credential was just used (batched, never awaited)."""
        ...
