"""The identity JWT the upstream MCP server receives with every proxied request (``upstream.identity_header``).

Claims: ``iss`` (``public_url``), ``sub`` (the user id), ``aud`` (``upstream.identity_audience``: by default the
upstream's URL origin, never the app-facing ``identity.audience``, so a token one side receives is refused by the
other), ``exp`` (``LIFETIME``: five minutes), ``iat``, ``jti``, ``api_key_id`` (API keys) or ``client_id`` (OAuth
tokens), ``scope`` (space-separated; a key has the gateway's default scopes) and ``connected_services`` (the user's
live connections as of signing, when connected services are configured). Signed with the identity signing keys
(ES256, ``kid`` in the header: the JWKS verifies it).

Signing costs a few hundred microseconds, so it is not done per request: the token is cached per credential and
re-signed only when less than half its life is left, when the current signing key changed (a rotation) or when
what it says changed (a scope). The cache is an LRU of at most ``max_entries`` credentials, and a revocation
announced on the bus drops its credentials' tokens at once (the credential is refused anyway; the token must not
outlive it in memory).
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from joserfc import jwt

from gateway.clock import Clock
from gateway.credentials.principal import Principal
from gateway.errors import ServiceUnavailable
from gateway.identity.signing_keys import ALGORITHM, SigningKey, SigningKeys, SigningUnavailable
from gateway.revocation import Revocation
from gateway.storage.base import StorageError

log = logging.getLogger("gateway.identity")

LIFETIME = 300
"""Seconds an upstream identity token is valid."""
MAX_ENTRIES = 10_000
"""Credentials whose token is kept (least recently used first out)."""


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal
    token: str
    kid: str
    issued_at: float
    expires_at: float


class UpstreamIdentity:
    def __init__(
        self,
        keys: SigningKeys,
        clock: Clock,
        *,
        issuer: str,
        audience: str,
        default_scopes: tuple[str, ...],
        lifetime: int = LIFETIME,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        if lifetime > keys.max_token_lifetime:
            raise ValueError("a token must not outlive its key's publication window")
        self._keys = keys
        self._clock = clock
        self.issuer = issuer
        self.audience = audience
        self._default_scope = " ".join(default_scopes)
        self.lifetime = lifetime
        self._max_entries = max_entries
        self.connected_services: Callable[[str], Awaitable[list[str]]] | None = None
        """Set by the connected-services feature when it starts (it comes after the proxy)."""
        self._cache: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self.signed = 0
        """How many tokens were signed (the cost this cache saves: one per credential per half-life)."""

    def __len__(self) -> int:
        return len(self._cache)

    def cached_token(self, principal: Principal) -> str | None:
        """The principal's cached token while it is fresh under the current key, without any lookup (None: call
        ``token_for``): what a busy credential's requests cost."""
        key = self._keys.current_if_loaded()
        entry = self._cache.get((principal.method, principal.credential_id))
        if key is None or entry is None or not self._fresh(entry, principal, key, self._clock.now()):
            return None
        return entry.token

    async def token_for(self, principal: Principal) -> str:
        """The principal's current token: the cached one while it is fresh, else a new one.

        When no key can be read or unsealed, a cached token still valid is used; without one, 503."""
        slot = (principal.method, principal.credential_id)
        now = self._clock.now()
        cached = self._cache.get(slot)
        try:
            key = await self._keys.current()
        except (SigningUnavailable, StorageError) as exc:
            if cached is not None and cached.principal == principal and now < cached.expires_at - 1:
                return cached.token
            log.error("upstream identity token unavailable: %s", exc)
            raise ServiceUnavailable("The upstream identity token cannot be signed, retry shortly") from exc
        cached = self._cache.get(slot)  # another request of this credential may have signed meanwhile
        if cached is not None and self._fresh(cached, principal, key, now):
            self._cache.move_to_end(slot)
            return cached.token
        entry = self._sign(principal, key, now, await self._connected_services(principal.user_id))
        self._cache[slot] = entry
        self._cache.move_to_end(slot)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)
        return entry.token

    def on_revocation(self, revocation: Revocation) -> None:
        """Revocation bus listener: forget the tokens of the credentials ``revocation`` names."""
        for slot in [slot for slot, entry in self._cache.items() if entry.principal.revoked_by(revocation)]:
            del self._cache[slot]

    def forget_all(self) -> None:
        """Revocation bus gap listener: announcements may have been lost, so no cached token is trusted."""
        self._cache.clear()

    def claims_for(
        self, principal: Principal, *, now: int, connected_services: list[str] | None = None
    ) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": principal.user_id,
            "aud": self.audience,
            "exp": now + self.lifetime,
            "iat": now,
            "jti": f"uid_{secrets.token_hex(16)}",
        }
        if principal.method == "oauth":
            claims["client_id"] = principal.client_id
        else:
            claims["api_key_id"] = principal.credential_id
        claims["scope"] = principal.scope if principal.scope is not None else self._default_scope
        claims["connected_services"] = list(connected_services or [])
        return claims

    def _fresh(self, entry: _Entry, principal: Principal, key: SigningKey, now: float) -> bool:
        return (
            entry.kid == key.kid
            and entry.principal == principal
            and entry.issued_at <= now < entry.issued_at + self.lifetime / 2
        )

    async def _connected_services(self, user_id: str) -> list[str]:
        """The user's live connections (only while signing, so at most once per token lifetime half)."""
        if self.connected_services is None:
            return []
        try:
            return await self.connected_services(user_id)
        except StorageError:
            return []  # the claim is informative: the proxy checks each connection when it is used

    def _sign(self, principal: Principal, key: SigningKey, now: float, connected: list[str]) -> _Entry:
        issued = int(now)
        claims = self.claims_for(principal, now=issued, connected_services=connected)
        header = {"alg": ALGORITHM, "kid": key.kid, "typ": "JWT"}
        token = jwt.encode(header, claims, key.private, algorithms=[ALGORITHM])
        self.signed += 1
        return _Entry(principal, token, key.kid, float(issued), float(claims["exp"]))
