"""The signing keys of the identity tokens: ES256 keys, their private halves sealed at rest, rotated by command.

Exactly one key is current and signs. ``rotate()`` makes a new key current; the old one stays in the JWKS until
every token it can have signed has expired: ``max_token_lifetime`` after its retirement, plus ``cache_seconds``
(a replica may go on signing with the key it cached for that long). Keys past that are deleted by the next
rotation. The first key is created on first use (or by ``rotate``); two replicas racing store only one.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from joserfc.jwk import ECKey

from gateway.clock import Clock
from gateway.identity.sealing import EncryptionKeys, UnsealError
from gateway.storage.base import StorageError
from gateway.storage.identity import SigningKeyStore, StoredSigningKey

log = logging.getLogger("gateway.identity")

ALGORITHM = "ES256"
CURVE = "P-256"
MAX_TOKEN_LIFETIME = 3600.0
"""The longest lifetime of any token signed by these keys (identity tokens last one hour)."""
CACHE_SECONDS = 30.0
"""How long a replica keeps the key list (and so may still sign with a key retired meanwhile)."""


REFRESH_GUARD = 5.0


class SigningUnavailable(Exception):
    """No token can be signed: no encryption key is configured, or the current key cannot be unsealed."""


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private: ECKey


class SigningKeys:
    def __init__(
        self,
        store: SigningKeyStore,
        clock: Clock,
        encryption: EncryptionKeys | None,
        *,
        max_token_lifetime: float = MAX_TOKEN_LIFETIME,
        cache_seconds: float = CACHE_SECONDS,
    ) -> None:
        self._store = store
        self._clock = clock
        self._encryption = encryption
        self.max_token_lifetime = max_token_lifetime
        self.cache_seconds = cache_seconds
        self._rows: list[StoredSigningKey] | None = None
        self._loaded_at = 0.0
        self._unsealed: dict[str, SigningKey] = {}

    async def current(self) -> SigningKey:
        """The key to sign with now (created when there is none yet)."""
        row = _current_row(await self._load())
        if row is None:
            await self._add(retire_current=False)
            row = _current_row(await self._load(fresh=True))
            if row is None:  # pragma: no cover - a rotation raced the creation and lost its key: retry once
                raise SigningUnavailable("no current signing key")
        return self._unseal(row)

    def current_if_loaded(self) -> SigningKey | None:
        """The current key without a lookup, when the list read less than ``cache_seconds`` ago names one that is
        already unsealed (None: call ``current``)."""
        rows = self._rows
        if rows is None or not 0 <= self._clock.monotonic() - self._loaded_at < self.cache_seconds:
            return None
        row = _current_row(rows)
        return None if row is None else self._unsealed.get(row.kid)

    async def published(self, *, refresh_unknown: bool = False) -> list[dict[str, Any]]:
        """The public JWKs verifiers need now: the current key and the retired ones still within their window.
        ``refresh_unknown`` (a token names a key not in the cached list) re-reads the list, at most every
        ``REFRESH_GUARD`` seconds so forged key ids cannot turn into one query each."""
        now = self._clock.now()
        fresh = refresh_unknown and not 0 <= self._clock.monotonic() - self._loaded_at < REFRESH_GUARD
        rows = await self._load(fresh=fresh)
        return [json.loads(row.public_jwk) for row in rows if self._still_published(row, now)]

    async def rotate(self) -> tuple[str, int]:
        """Make a new key current; delete the keys no token can need any more. ``(new kid, keys deleted)``."""
        kid = await self._add(retire_current=True)
        self._rows = None
        deleted = await self._store.delete_signing_keys(retired_before=self._clock.now() - self.publication_window)
        return kid, deleted

    async def all(self) -> list[StoredSigningKey]:
        return await self._load(fresh=True)

    @property
    def publication_window(self) -> float:
        """How long a retired key stays in the JWKS."""
        return self.max_token_lifetime + self.cache_seconds

    def _still_published(self, row: StoredSigningKey, now: float) -> bool:
        return row.retired_at is None or now < row.retired_at + self.publication_window

    async def _load(self, *, fresh: bool = False) -> list[StoredSigningKey]:
        age = self._clock.monotonic() - self._loaded_at
        if fresh or self._rows is None or not 0 <= age < self.cache_seconds:
            try:
                self._rows = await self._store.list_signing_keys()
            except StorageError:
                if self._rows is None:
                    raise
                log.warning("signing keys: storage unavailable, keeping the list read %.0f s ago", age)
                return self._rows
            self._loaded_at = self._clock.monotonic()
        return self._rows

    async def _add(self, *, retire_current: bool) -> str:
        if self._encryption is None:
            raise SigningUnavailable(
                "no encryption key for signing keys: set identity.encryption_keys (e.g. ${GATEWAY_SECRET_KEYS}; "
                "`mcp-gateway signing-keys generate-secret` prints one)"
            )
        kid = f"sk_{secrets.token_hex(8)}"
        key = ECKey.generate_key(CURVE, parameters={"kid": kid, "alg": ALGORITHM, "use": "sig"}, private=True)
        key_id, sealed = self._encryption.seal(
            json.dumps(key.as_dict(private=True)).encode(), associated_data=kid.encode()
        )
        row = StoredSigningKey(
            kid=kid,
            algorithm=ALGORITHM,
            public_jwk=json.dumps(key.as_dict(private=False), sort_keys=True),
            encrypted_private_key=sealed,
            encryption_key_id=key_id,
            created_at=self._clock.now(),
        )
        stored = await self._store.add_signing_key(row, now=self._clock.now(), retire_current=retire_current)
        if not stored and retire_current:
            raise SigningUnavailable("another rotation ran at the same time; run it again")
        return kid

    def _unseal(self, row: StoredSigningKey) -> SigningKey:
        cached = self._unsealed.get(row.kid)
        if cached is not None:
            return cached
        if self._encryption is None:
            raise SigningUnavailable("identity.encryption_keys is not set: the signing key cannot be unsealed")
        try:
            plain = self._encryption.unseal(
                row.encryption_key_id, row.encrypted_private_key, associated_data=row.kid.encode()
            )
        except UnsealError as exc:
            raise SigningUnavailable(f"signing key {row.kid}: {exc}") from exc
        key = SigningKey(row.kid, ECKey.import_key(json.loads(plain)))
        self._unsealed[row.kid] = key
        return key


def _current_row(rows: list[StoredSigningKey]) -> StoredSigningKey | None:
    return next((row for row in rows if row.current), None)
