"""``verify_identity_token``: the gateway's own check of an identity token (JWT) it is shown, e.g. by ``/v1/proxy``.

Beyond the signature, ``iss``, ``aud`` and ``exp`` (``IdentityTokens.verify``), revocation reaches the token
although it has not expired, by watermarks rather than a list of ``jti``:

- the API key (``api_key_id``) is revoked, expired or gone, or its owner is disabled;
- the user (``sub``) is disabled or gone;
- an app-flow family of (key, user) was revoked at or after the token's ``iat`` (reuse, ``/v1/auth/revoke``, the
  user revoking the app, an operator): ``AppFlowStore.identity_not_before``.

The lookups are cached per (key, user) for at most ``ttl`` (≤ 1 s), or longer while the storage's revocation
watermark (raised in the same transaction as every one of those revocations) is seen unchanged, exactly like the
validation cache of API keys and OAuth tokens: every replica refuses within a second.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from gateway.clock import Clock
from gateway.credentials.cache import DEFAULT_CACHE_SIZE, DEFAULT_CACHE_TTL, MAX_CACHE_TTL, MAX_ENTRY_AGE
from gateway.credentials.watermark import Watermark
from gateway.identity.tokens import CLAIMS, IdentityTokens, InvalidIdentityToken
from gateway.revocation import Revocation
from gateway.storage.app_flow import AppFlowStore
from gateway.storage.base import ApiKeyStore, UserStore


class _Store(AppFlowStore, ApiKeyStore, UserStore, Protocol):
    pass


@dataclass(frozen=True, slots=True)
class _Standing:
    refusal: str | None
    """Why every token of (key, user) is refused; None: only those issued at or before ``not_before``."""
    not_before: float | None
    fetched_at: float
    epoch: int | None


class IdentityTokenVerifier:
    def __init__(
        self,
        tokens: IdentityTokens,
        store: _Store,
        clock: Clock,
        watermark: Watermark | None,
        *,
        ttl: float = DEFAULT_CACHE_TTL,
        size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self._tokens = tokens
        self._store = store
        self._clock = clock
        self._watermark = watermark
        self._ttl = min(ttl, MAX_CACHE_TTL)
        self._size = size
        self._standing: OrderedDict[tuple[str, str], _Standing] = OrderedDict()

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims (exactly ``CLAIMS``), or ``InvalidIdentityToken``. Raises ``StorageUnavailable``
        when storage cannot say whether it was revoked."""
        claims = await self._tokens.verify(token)
        if set(claims) != set(CLAIMS):
            raise InvalidIdentityToken("not an identity token of this gateway")
        api_key_id, subject, iat = claims["api_key_id"], claims["sub"], claims["iat"]
        if not isinstance(api_key_id, str) or not isinstance(subject, str) or not isinstance(iat, int):
            raise InvalidIdentityToken("malformed claims")
        standing = await self._standing_of(api_key_id, subject)
        if standing.refusal is not None:
            raise InvalidIdentityToken(standing.refusal)
        if standing.not_before is not None and iat <= standing.not_before:
            raise InvalidIdentityToken("revoked")
        return claims

    async def _standing_of(self, api_key_id: str, subject: str) -> _Standing:
        key = (api_key_id, subject)
        cached = self._standing.get(key)
        if cached is not None and self._fresh(cached):
            return cached
        epoch = self._watermark.epoch if self._watermark is not None else None
        fetched_at = self._clock.monotonic()
        refusal = await self._refusal(api_key_id, subject)
        not_before = await self._store.identity_not_before(api_key_id, subject) if refusal is None else None
        standing = _Standing(refusal, not_before, fetched_at, epoch)
        self._standing.pop(key, None)
        self._standing[key] = standing
        while len(self._standing) > self._size:
            self._standing.popitem(last=False)
        return standing

    async def _refusal(self, api_key_id: str, subject: str) -> str | None:
        row = await self._store.get_api_key(api_key_id)
        if row is None or not row.usable_at(self._clock.now()):
            return "the API key was revoked"
        owner = await self._store.get_user(row.user_id)
        if owner is None or not owner.active:
            return "the API key's account is disabled"
        user = await self._store.get_user(subject) if subject != row.user_id else owner
        if user is None or not user.active:
            return "the user is disabled"
        return None

    def _fresh(self, standing: _Standing) -> bool:
        age = self._clock.monotonic() - standing.fetched_at
        if age < self._ttl:
            return True
        return (
            self._watermark is not None
            and age < MAX_ENTRY_AGE
            and self._watermark.seen_unchanged(standing.epoch, within=self._ttl)
        )

    def on_revocation(self, revocation: Revocation) -> None:
        """A ``RevocationBus`` listener: drop the cached standings the revocation may change at once."""
        keys = set(revocation.api_key_ids)
        for key in [k for k in self._standing if k[0] in keys or revocation.account_id in k]:
            del self._standing[key]

    def flush(self) -> None:
        self._standing.clear()


IDENTITY_VERIFIER = web.AppKey("identity_verifier", IdentityTokenVerifier)


async def verify_identity_token(app: web.Application, token: str) -> dict[str, Any]:
    """The claims of an identity token this gateway issued and nothing has revoked; ``InvalidIdentityToken``
    otherwise (``StorageUnavailable`` when storage cannot say). Use it wherever the gateway accepts one."""
    return await app[IDENTITY_VERIFIER].verify(token)
