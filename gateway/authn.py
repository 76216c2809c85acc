"""Who is calling: credential extraction and API-key validation for the MCP endpoints.

One credential per request (RFC 6750 §2), in ``X-API-Key`` or ``Authorization: Bearer``; never in
the query string or a cookie. Malformed keys are refused before any storage lookup; valid ones are
cached for at most ``cache_ttl`` seconds so a revocation made anywhere takes effect within it.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from gateway.apikeys import ApiKeyFormat
from gateway.clock import Clock
from gateway.errors import InvalidToken, ServiceUnavailable, TwoCredentials, Unauthorized
from gateway.last_used import LastUsedRecorder
from gateway.secrets_hashing import secret_hash
from gateway.storage.base import ApiKey, ApiKeyStore, StorageUnavailable, User, UserStore

MAX_CACHE_TTL = 1.0
_BEARER = re.compile(r"^Bearer +([A-Za-z0-9\-._~+/]+=*) *$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    email: str
    method: Literal["api_key", "oauth"]
    credential_id: str


@dataclass(frozen=True, slots=True)
class _Cached:
    key: ApiKey
    user: User
    fetched_at: float


def challenge(error: str | None = None, description: str | None = None) -> dict[str, str]:
    """The ``WWW-Authenticate`` header of a 401 (RFC 6750 §3)."""
    params = ['realm="mcp-gateway"']
    if error:
        params.append(f'error="{error}"')
    if description:
        params.append(f'error_description="{description}"')
    return {"WWW-Authenticate": "Bearer " + ", ".join(params)}


def extract_credential(request: web.Request) -> str:
    """The one credential the request carries; raises when there is none, two, or a wrong scheme."""
    authorizations = request.headers.getall("Authorization", [])
    api_keys = request.headers.getall("X-API-Key", [])
    if len(authorizations) + len(api_keys) > 1:
        raise TwoCredentials("Send exactly one credential per request", headers=challenge("invalid_request"))
    if api_keys:
        value = api_keys[0].strip()
        if not value:
            raise Unauthorized("An API key or access token is required", headers=challenge())
        return value
    if not authorizations:
        raise Unauthorized("An API key or access token is required", headers=challenge())
    match = _BEARER.match(authorizations[0])
    if match is None:
        raise Unauthorized("Use the Bearer authentication scheme", headers=challenge())
    return match.group(1)


class Authenticator:
    def __init__(
        self,
        *,
        key_format: ApiKeyFormat,
        users: UserStore,
        api_keys: ApiKeyStore,
        clock: Clock,
        last_used: LastUsedRecorder,
        cache_ttl: float = MAX_CACHE_TTL,
        cache_size: int = 10_000,
    ) -> None:
        self._format = key_format
        self._users = users
        self._keys = api_keys
        self._clock = clock
        self._last_used = last_used
        self._ttl = min(cache_ttl, MAX_CACHE_TTL)
        self._size = cache_size
        self._cache: OrderedDict[str, _Cached] = OrderedDict()

    async def authenticate(self, request: web.Request) -> Principal:
        credential = extract_credential(request)
        if not self._format.looks_like_key(credential):
            raise InvalidToken("The access token is invalid", headers=challenge("invalid_token"))
        if not self._format.is_well_formed(credential):
            raise InvalidToken("The API key is malformed", headers=challenge("invalid_token"))
        key, user = await self._lookup(secret_hash(credential))
        now = self._clock.now()
        if key is None or user is None or not key.usable_at(now) or not user.active:
            raise InvalidToken("The API key is unknown, expired or revoked", headers=challenge("invalid_token"))
        self._last_used.record(key.id, now)
        return Principal(user_id=user.id, email=user.email, method="api_key", credential_id=key.id)

    async def _lookup(self, key_hash: str) -> tuple[ApiKey | None, User | None]:
        cached = self._cache.get(key_hash)
        mono = self._clock.monotonic()
        if cached is not None and mono - cached.fetched_at < self._ttl:
            return cached.key, cached.user
        try:
            key = await self._keys.get_api_key_by_hash(key_hash)
            user = await self._users.get_user(key.user_id) if key is not None else None
        except StorageUnavailable as exc:
            raise ServiceUnavailable("Credential store unavailable, retry shortly") from exc
        if key is not None and user is not None:
            self._cache[key_hash] = _Cached(key, user, mono)
            self._cache.move_to_end(key_hash)
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        else:
            self._cache.pop(key_hash, None)
        return key, user

    def forget(self, key_hash: str) -> None:
        """Drop a cached validation at once (a revocation in this process)."""
        self._cache.pop(key_hash, None)
