"""Storage contract of the identity side: the signing keys of the identity tokens (JWTs) the gateway issues."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class StoredSigningKey:
    """A signing key as stored: the public JWK in clear, the private JWK encrypted (``gateway.identity``)."""

    kid: str
    algorithm: str
    public_jwk: str
    """The public key as a JWK (JSON text), with ``kid``, ``alg`` and ``use``."""
    encrypted_private_key: str
    """The private JWK sealed with AES-GCM: base64url(nonce ‖ ciphertext), the ``kid`` as associated data."""
    encryption_key_id: str
    """Which operator encryption key sealed it (``identity.encryption_keys``)."""
    created_at: float
    retired_at: float | None = None
    """When another key became current; None while this one is current."""

    @property
    def current(self) -> bool:
        return self.retired_at is None


class SigningKeyStore(Protocol):
    async def add_signing_key(self, key: StoredSigningKey, *, now: float, retire_current: bool) -> bool:
        """Store ``key`` (whose ``retired_at`` is None) as the current key, in one transaction.

        With ``retire_current`` the key current so far is retired at ``now``. Without it the key is stored only
        when there is no current key yet (two replicas creating the first key at once: one wins); returns
        whether ``key`` was stored."""
        ...

    async def list_signing_keys(self) -> list[StoredSigningKey]:
        """Every stored key, oldest first."""
        ...

    async def delete_signing_keys(self, *, retired_before: float) -> int:
        """Delete the keys retired before the given time (never the current one); returns how many went."""
        ...
