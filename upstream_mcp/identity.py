"""Verify the gateway's identity JWT (``X-MCP-Identity``) against its published key set.

The key set (``--identity-jwks URL``, the gateway's ``/.well-known/jwks.json``) is fetched on first use and kept
``cache_seconds``; a token naming a key id not in it re-fetches it at once (the gateway rotated its key), but such
re-fetches happen at most once per ``unknown_kid_interval`` seconds, so forged key ids cannot turn into one
request to the gateway each. ES256 only; ``aud`` must be ``--identity-audience``; ``iss`` must be
``--identity-issuer`` when given; ``exp``, ``iat`` and ``sub`` are required.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact

ALGORITHM = "ES256"
CACHE_SECONDS = 300.0
UNKNOWN_KID_INTERVAL = 10.0
LEEWAY = 30
FETCH_TIMEOUT = 10.0

Fetch = Callable[[str], Awaitable[dict[str, Any]]]


class IdentityRejected(Exception):
    """The token is malformed, signed by no published key, expired, or for another audience or issuer."""


async def fetch_json(url: str) -> dict[str, Any]:
    """GET ``url`` and parse its JSON object (the key set)."""
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as response:
        if response.status != 200:
            raise IdentityRejected(f"the key set could not be fetched: HTTP {response.status}")
        body = json.loads(await response.read())
    if not isinstance(body, dict) or not isinstance(body.get("keys"), list):
        raise IdentityRejected("the key set is not a JWKS")
    return body


@dataclass
class _Cached:
    keys: dict[str, Any]
    fetched_at: float


class IdentityVerifier:
    def __init__(
        self,
        jwks_url: str,
        audience: str,
        *,
        issuer: str | None = None,
        fetch: Fetch = fetch_json,
        monotonic: Callable[[], float] = time.monotonic,
        cache_seconds: float = CACHE_SECONDS,
        unknown_kid_interval: float = UNKNOWN_KID_INTERVAL,
    ) -> None:
        self.jwks_url = jwks_url
        self.audience = audience
        self.issuer = issuer
        self._fetch = fetch
        self._monotonic = monotonic
        self._cache_seconds = cache_seconds
        self._unknown_kid_interval = unknown_kid_interval
        self._cached: _Cached | None = None
        self._last_unknown_refetch: float | None = None
        self._lock = anyio.Lock()
        self.fetches = 0

    async def verify(self, token: str) -> dict[str, Any]:
        """The verified claims, or ``IdentityRejected`` saying why not."""
        kid = token_key_id(token)
        jwks = await self._key_set()
        if not any(key.get("kid") == kid for key in jwks["keys"]):
            jwks = await self._refetch_for_unknown_kid(kid)
        try:
            decoded = jwt.decode(token, KeySet.import_key_set(jwks), algorithms=[ALGORITHM])  # type: ignore[arg-type]
        except (JoseError, ValueError) as exc:
            raise IdentityRejected(f"bad signature or malformed token ({exc})") from exc
        checks: dict[str, Any] = {
            "aud": {"essential": True, "value": self.audience},
            "sub": {"essential": True},
            "exp": {"essential": True},
            "iat": {"essential": True},
        }
        if self.issuer is not None:
            checks["iss"] = {"essential": True, "value": self.issuer}
        try:
            jwt.JWTClaimsRegistry(leeway=LEEWAY, **checks).validate(decoded.claims)
        except JoseError as exc:
            raise IdentityRejected(f"{exc.error}: {exc.description or ''}".rstrip(": ")) from exc
        return dict(decoded.claims)

    async def _key_set(self) -> dict[str, Any]:
        async with self._lock:
            cached = self._cached
            if cached is None or not 0 <= self._monotonic() - cached.fetched_at < self._cache_seconds:
                cached = await self._load()
            return cached.keys

    async def _refetch_for_unknown_kid(self, kid: str) -> dict[str, Any]:
        async with self._lock:
            cached = self._cached
            if cached is not None and any(key.get("kid") == kid for key in cached.keys["keys"]):
                return cached.keys  # another request re-fetched it meanwhile
            now = self._monotonic()
            last = self._last_unknown_refetch
            if last is not None and 0 <= now - last < self._unknown_kid_interval:
                raise IdentityRejected(f"key id {kid!r} is not in the key set")
            self._last_unknown_refetch = now
            cached = await self._load()
        if not any(key.get("kid") == kid for key in cached.keys["keys"]):
            raise IdentityRejected(f"key id {kid!r} is not in the key set")
        return cached.keys

    async def _load(self) -> _Cached:
        try:
            keys = await self._fetch(self.jwks_url)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise IdentityRejected(f"the key set could not be fetched ({type(exc).__name__})") from exc
        self.fetches += 1
        self._cached = _Cached(keys, self._monotonic())
        return self._cached


def token_key_id(token: str) -> str:
    """The ``kid`` of the token's protected header (unverified)."""
    try:
        header = extract_compact(token.encode("ascii")).protected
    except (JoseError, ValueError, UnicodeError) as exc:
        raise IdentityRejected("malformed token") from exc
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise IdentityRejected("no kid in the token's header")
    return kid
