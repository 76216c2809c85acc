"""HTTP and JOSE plumbing of the provider client: bounded JSON calls, the discovery document, the provider's JWKS
(cached, re-fetched on an unknown ``kid``) and the verification of its ID tokens."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from gateway.clock import Clock

MAX_RESPONSE_BYTES = 512 * 1024
REQUEST_TIMEOUT = 10.0
GOOGLE_ISSUER = "https://accounts.google.com"
CLOCK_LEEWAY = 60
"""Seconds of clock difference with the provider tolerated on ``exp`` and ``iat``."""
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"}
)


class ProviderError(Exception):
    """A sign-in through a provider failed. ``code`` is stable and safe to show or send to an app (``access_denied``,
    ``invalid_state``, ``issuer_mismatch``, ``invalid_id_token``, ``token_error``, ``provider_unavailable``, …);
    ``description`` is short and never quotes a token or a secret."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description


async def fetch_json(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    what: str,
    headers: Mapping[str, str] | None = None,
    data: Mapping[str, str] | None = None,
    error_code: str = "provider_unavailable",
) -> Any:
    """The JSON body of a 2xx answer. A 4xx answer with an OAuth ``error`` raises ``ProviderError(error_code)``
    naming it; anything else (network, 5xx, not JSON, too big) raises ``provider_unavailable``."""
    try:
        async with session.request(
            method,
            url,
            headers={"Accept": "application/json", **(headers or {})},
            data=data,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
        ) as response:
            raw = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                raw += chunk
                if len(raw) > MAX_RESPONSE_BYTES:
                    break
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ProviderError("provider_unavailable", f"{what}: {type(exc).__name__}") from exc
    if len(raw) > MAX_RESPONSE_BYTES:
        raise ProviderError("provider_unavailable", f"{what}: the answer is too large")
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if 200 <= status < 300 and body is not None:
        return body
    if 400 <= status < 500 and isinstance(body, dict) and isinstance(body.get("error"), str):
        raise ProviderError(error_code, f"{what}: the provider answered {body['error'][:64]}")
    raise ProviderError("provider_unavailable", f"{what}: HTTP {status}")


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str | None
    jwks_uri: str | None
    iss_parameter_supported: bool
    """RFC 9207: the provider puts ``iss`` in every authorization response, and the client must check it."""
    id_token_algorithms: frozenset[str]

    @classmethod
    def from_discovery(cls, document: object, expected_issuer: str) -> ProviderMetadata:
        """OpenID Connect Discovery §4.3: the document's ``issuer`` must be exactly the configured one."""
        if not isinstance(document, dict) or document.get("issuer") != expected_issuer:
            raise ProviderError("misconfigured", "the discovery document names another issuer")
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(document.get(key), str):
                raise ProviderError("misconfigured", f"the discovery document has no {key}")
        algorithms = document.get("id_token_signing_alg_values_supported") or ["RS256"]
        userinfo = document.get("userinfo_endpoint")
        return cls(
            issuer=expected_issuer,
            authorization_endpoint=document["authorization_endpoint"],
            token_endpoint=document["token_endpoint"],
            userinfo_endpoint=userinfo if isinstance(userinfo, str) else None,
            jwks_uri=document["jwks_uri"],
            iss_parameter_supported=document.get("authorization_response_iss_parameter_supported") is True,
            id_token_algorithms=frozenset(a for a in algorithms if a in ASYMMETRIC_ALGORITHMS),
        )


class JwksCache:
    """A provider's signing keys: fetched on first use, kept ``ttl`` seconds, and re-fetched at once when a token
    names a ``kid`` the cached set lacks (the provider rotated), at most every ``min_refetch`` seconds."""

    def __init__(
        self, session: aiohttp.ClientSession, clock: Clock, *, ttl: float = 3600.0, min_refetch: float = 10.0
    ) -> None:
        self._session = session
        self._clock = clock
        self._ttl = ttl
        self._min_refetch = min_refetch
        self._sets: dict[str, tuple[float, KeySet]] = {}

    def seed(self, uri: str, keys: Mapping[str, Any]) -> None:
        """Start with a known key set (tests; or a set shipped with the configuration)."""
        self._sets[uri] = (self._clock.monotonic(), KeySet.import_key_set(dict(keys)))  # type: ignore[arg-type]

    async def key_set(self, uri: str, kid: str | None) -> KeySet:
        cached = self._sets.get(uri)
        age = None if cached is None else self._clock.monotonic() - cached[0]
        if cached is not None and age is not None and 0 <= age < self._ttl and _has_kid(cached[1], kid):
            return cached[1]
        if cached is not None and age is not None and 0 <= age < self._min_refetch:
            return cached[1]  # fetched a moment ago: a token naming an unknown kid is simply refused
        document = await fetch_json(self._session, "GET", uri, what="the provider's JWKS")
        try:
            keys = KeySet.import_key_set(document)
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise ProviderError("provider_unavailable", "the provider's JWKS is not a key set") from exc
        self._sets[uri] = (self._clock.monotonic(), keys)
        return keys


def _has_kid(keys: KeySet, kid: str | None) -> bool:
    return kid is None or any(key.kid == kid for key in keys.keys)


def unverified_header(token: str) -> dict[str, Any]:
    try:
        segment = token.split(".")[0]
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error, IndexError) as exc:
        raise ProviderError("invalid_id_token", "the ID token is malformed") from exc
    if not isinstance(header, dict):
        raise ProviderError("invalid_id_token", "the ID token is malformed")
    return header


async def verify_id_token(
    token: str,
    *,
    metadata: ProviderMetadata,
    jwks: JwksCache,
    client_id: str,
    nonce: str,
    now: float,
    algorithms: Collection[str] | None = None,
) -> dict[str, Any]:
    """OIDC Core §3.1.3.7: the signature by a key of the provider's JWKS (asymmetric algorithms only), ``iss``
    exactly the issuer, ``aud`` containing the client (and ``azp`` the client when there are several audiences),
    ``exp`` in the future, ``iat`` present, ``nonce`` the one sent."""
    if metadata.jwks_uri is None:
        raise ProviderError("misconfigured", "the provider publishes no JWKS")
    allowed = sorted(algorithms or metadata.id_token_algorithms or {"RS256"})
    header = unverified_header(token)
    if header.get("alg") not in allowed:
        raise ProviderError("invalid_id_token", "the ID token's algorithm is not accepted")
    kid = header.get("kid") if isinstance(header.get("kid"), str) else None
    keys = await jwks.key_set(metadata.jwks_uri, kid)
    try:
        decoded = jwt.decode(token, keys, algorithms=allowed)
    except (JoseError, ValueError) as exc:
        raise ProviderError("invalid_id_token", "the ID token's signature does not verify") from exc
    claims = dict(decoded.claims)
    issuers = [metadata.issuer]
    if metadata.issuer == GOOGLE_ISSUER:
        issuers.append("accounts.google.com")  # Google documents both forms of its ID tokens' iss
    registry = jwt.JWTClaimsRegistry(
        now=int(now),
        leeway=CLOCK_LEEWAY,
        iss={"essential": True, "values": issuers},
        aud={"essential": True, "value": client_id},
        sub={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
        nonce={"essential": True, "value": nonce},
    )
    try:
        registry.validate(claims)
    except JoseError as exc:
        raise ProviderError("invalid_id_token", f"the ID token was refused ({exc.description or exc.error})") from exc
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise ProviderError("invalid_id_token", "the ID token was issued to another party (azp)")
    return claims
