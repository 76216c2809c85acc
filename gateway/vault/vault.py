"""The vault: each user's provider tokens per connected service, sealed at rest (AES-256-GCM, ``sealing.py``).

The store API other features call (the app flow's callback, the dashboard)::

    await vault.save_connection(
        user_id, "google",
        access_token=..., refresh_token=..., expires_in=3599, scopes=("openid", "gmail.readonly"),
        provider_account_id="1234", provider_email="alice@example.com",
    )
    # or, from a ``ProviderIdentity`` of ``ProviderClient.complete``:
    await vault.save_identity(user_id, "google", identity)

Only ``sealed_tokens`` holds secrets: the access and refresh tokens as sealed JSON, the row's ``user_id/service``
as associated data. Expiry, scopes, the provider account and e-mail are clear (the dashboard lists them). The
tokens never reach a log, an error body or a metric: ``ProviderTokens`` hides them from ``repr``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.clock import Clock
from gateway.identity.providers import ProviderIdentity
from gateway.identity.sealing import EncryptionKeys, UnsealError
from gateway.storage.vault import StoredConnection, VaultStore

CONNECTED = "connected"
BROKEN = "broken"


class VaultLocked(Exception):
    """No encryption key is configured (``identity.encryption_keys``), or a row's key is missing or its blob is
    corrupt: the message names the key id, never a token."""


@dataclass(frozen=True)
class ProviderTokens:
    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: float | None
    scopes: tuple[str, ...]

    @classmethod
    def from_response(
        cls, response: Mapping[str, Any], now: float, *, previous: ProviderTokens | None = None
    ) -> ProviderTokens:
        """From a token endpoint's answer. A refresh answer without a refresh token (no rotation, like Google) or
        without a scope keeps the previous ones (RFC 6749 §6)."""
        access = response.get("access_token")
        if not isinstance(access, str) or not access:
            raise ValueError("the token response has no access_token")
        refresh = response.get("refresh_token")
        expires_in = response.get("expires_in")
        scope = response.get("scope")
        return cls(
            access_token=access,
            refresh_token=refresh
            if isinstance(refresh, str) and refresh
            else (previous.refresh_token if previous else None),
            expires_at=now + float(expires_in) if isinstance(expires_in, int | float) else None,
            scopes=tuple(scope.split()) if isinstance(scope, str) else (previous.scopes if previous else ()),
        )


@dataclass(frozen=True)
class Connection:
    """An unsealed vault row."""

    user_id: str
    service: str
    tokens: ProviderTokens
    provider_account_id: str
    provider_email: str | None
    status: str
    version: int
    created_at: float
    last_used_at: float | None
    issued_at: float
    """When these tokens were written (their lifetime is ``tokens.expires_at - issued_at``)."""

    @property
    def broken(self) -> bool:
        return self.status == BROKEN


def _associated_data(user_id: str, service: str) -> bytes:
    return f"vault:{user_id}/{service}".encode()


class Vault:
    def __init__(
        self,
        store: VaultStore,
        keys: EncryptionKeys | None,
        clock: Clock,
        *,
        on_unseal_failure: Callable[[str], None] | None = None,
    ) -> None:
        self._store = store
        self._keys = keys
        self._clock = clock
        self._on_unseal_failure = on_unseal_failure

    async def save_connection(
        self,
        user_id: str,
        service: str,
        *,
        access_token: str,
        refresh_token: str | None,
        expires_in: float | None,
        scopes: Iterable[str],
        provider_account_id: str,
        provider_email: str | None = None,
    ) -> Connection:
        """Store (or replace, on a reconnection) the tokens of ``user_id`` for ``service``; the row is
        ``connected`` again. ``expires_in`` as the provider said it (seconds from now)."""
        now = self._clock.now()
        tokens = ProviderTokens(
            access_token, refresh_token, None if expires_in is None else now + expires_in, tuple(scopes)
        )
        key_id, sealed = self._seal(user_id, service, tokens)
        previous = await self._store.get_connection(user_id, service)
        row = StoredConnection(
            user_id=user_id,
            service=service,
            sealed_tokens=sealed,
            encryption_key_id=key_id,
            expires_at=tokens.expires_at,
            scopes=" ".join(tokens.scopes),
            provider_account_id=provider_account_id,
            provider_email=provider_email,
            status=CONNECTED,
            version=(previous.version + 1) if previous else 1,
            created_at=now,
            updated_at=now,
        )
        await self._store.put_connection(row)
        return self._open(row)

    async def save_identity(self, user_id: str, service: str, identity: ProviderIdentity) -> Connection:
        """``save_connection`` from what ``ProviderClient.complete`` returned (the app flow's callback)."""
        tokens = ProviderTokens.from_response(identity.tokens, self._clock.now())
        expires_in = None if tokens.expires_at is None else tokens.expires_at - self._clock.now()
        return await self.save_connection(
            user_id,
            service,
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token,
            expires_in=expires_in,
            scopes=tokens.scopes,
            provider_account_id=identity.subject,
            provider_email=identity.email,
        )

    async def connection(self, user_id: str, service: str) -> Connection | None:
        row = await self._store.get_connection(user_id, service)
        return None if row is None else self._open(row)

    async def store_refreshed(self, current: Connection, tokens: ProviderTokens) -> bool:
        """Compare-and-set on ``current.version`` (the fencing token): False when another refresh got there."""
        return await self._write(current, tokens, CONNECTED)

    async def mark_broken(self, current: Connection) -> bool:
        return await self._write(current, current.tokens, BROKEN)

    async def touch(self, connection: Connection) -> None:
        await self._store.touch_connection(connection.user_id, connection.service, self._clock.now())

    async def disconnect(self, user_id: str, service: str) -> bool:
        return await self._store.delete_connection(user_id, service)

    async def exists(self, user_id: str, service: str) -> bool:
        """Whether the row is still there (nothing unsealed): a call in flight checks it before answering."""
        return await self._store.get_connection(user_id, service) is not None

    async def list_connections(self, user_id: str) -> list[StoredConnection]:
        """The rows as stored (sealed): enough to list services without unsealing anything."""
        return await self._store.list_connections(user_id)

    async def rotate_key(self) -> int:
        """Re-seal every row not sealed under the current first key; returns how many were re-sealed. A row
        written meanwhile (a refresh) is already under the current key: its compare-and-set simply loses."""
        keys = self._require_keys()
        count = 0
        for row in await self._store.list_connections():
            if row.encryption_key_id == keys.current_id:
                continue
            opened = self._open(row)
            if await self._write(opened, opened.tokens, row.status):
                count += 1
        return count

    async def _write(self, current: Connection, tokens: ProviderTokens, status: str) -> bool:
        key_id, sealed = self._seal(current.user_id, current.service, tokens)
        return await self._store.update_connection_tokens(
            current.user_id,
            current.service,
            expected_version=current.version,
            sealed_tokens=sealed,
            encryption_key_id=key_id,
            expires_at=tokens.expires_at,
            scopes=" ".join(tokens.scopes),
            status=status,
            now=self._clock.now(),
        )

    def _require_keys(self) -> EncryptionKeys:
        if self._keys is None:
            raise VaultLocked("identity.encryption_keys is not configured: the vault cannot seal or unseal")
        return self._keys

    def _seal(self, user_id: str, service: str, tokens: ProviderTokens) -> tuple[str, str]:
        plain = json.dumps({"a": tokens.access_token, "r": tokens.refresh_token}).encode()
        return self._require_keys().seal(plain, associated_data=_associated_data(user_id, service))

    def _open(self, row: StoredConnection) -> Connection:
        keys = self._require_keys()
        try:
            plain = json.loads(
                keys.unseal(
                    row.encryption_key_id, row.sealed_tokens, associated_data=_associated_data(row.user_id, row.service)
                )
            )
        except (UnsealError, ValueError) as exc:
            if self._on_unseal_failure is not None:
                self._on_unseal_failure(row.service)
            raise VaultLocked(f"cannot unseal a vault row sealed under key {row.encryption_key_id!r}") from exc
        tokens = ProviderTokens(plain["a"], plain["r"], row.expires_at, tuple(row.scopes.split()))
        return Connection(
            user_id=row.user_id,
            service=row.service,
            tokens=tokens,
            provider_account_id=row.provider_account_id,
            provider_email=row.provider_email,
            status=row.status,
            version=row.version,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            issued_at=row.updated_at,
        )
