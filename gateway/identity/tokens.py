"""Identity tokens: JWTs any MCP server can verify against ``/.well-known/jwks.json``.

Exactly these claims, as the product description promises: ``iss`` (``public_url``), ``sub`` (the gateway's user
id), ``aud`` (``identity.audience``, default ``mcp-servers``), ``exp``, ``iat``, ``jti``, ``api_key_id``,
``connected_services``; signed with ES256, ``kid`` in the header; they last one hour.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Sequence
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from gateway.clock import Clock
from gateway.identity.signing_keys import ALGORITHM, SigningKeys

IDENTITY_TOKEN_LIFETIME = 3600
CLAIMS = ("iss", "sub", "aud", "exp", "iat", "jti", "api_key_id", "connected_services")


class InvalidIdentityToken(Exception):
    """The token is malformed, not signed by a published key, expired, or not for this issuer and audience."""


class IdentityTokens:
    def __init__(
        self, keys: SigningKeys, clock: Clock, *, issuer: str, audience: str, lifetime: int = IDENTITY_TOKEN_LIFETIME
    ) -> None:
        if lifetime > keys.max_token_lifetime:
            raise ValueError("a token must not outlive its key's publication window")
        self._keys = keys
        self._clock = clock
        self.issuer = issuer
        self.audience = audience
        self.lifetime = lifetime

    async def mint(self, *, subject: str, api_key_id: str, connected_services: Sequence[str] = ()) -> str:
        key = await self._keys.current()
        now = int(self._clock.now())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.audience,
            "exp": now + self.lifetime,
            "iat": now,
            "jti": f"tok_{secrets.token_hex(16)}",
            "api_key_id": api_key_id,
            "connected_services": list(connected_services),
        }
        header = {"alg": ALGORITHM, "kid": key.kid, "typ": "JWT"}
        return jwt.encode(header, claims, key.private, algorithms=[ALGORITHM])

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or ``InvalidIdentityToken``. An unknown ``kid`` re-reads the keys once."""
        kid = _kid(token)
        published = await self._keys.published()
        if not any(key.get("kid") == kid for key in published):
            published = await self._keys.published(refresh_unknown=True)  # rotated on another replica?
        try:
            decoded = jwt.decode(token, KeySet.import_key_set({"keys": published}), algorithms=[ALGORITHM])
        except (JoseError, ValueError) as exc:
            raise InvalidIdentityToken("not signed by a published key, or malformed") from exc
        registry = jwt.JWTClaimsRegistry(
            now=int(self._clock.now()),
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.audience},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            jti={"essential": True},
        )
        try:
            registry.validate(decoded.claims)
        except JoseError as exc:
            raise InvalidIdentityToken(f"{exc.error}: {exc.description or ''}".rstrip(": ")) from exc
        return dict(decoded.claims)


def _kid(token: str) -> str:
    try:
        segment = token.split(".", 1)[0]
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error) as exc:
        raise InvalidIdentityToken("malformed") from exc
    kid = header.get("kid") if isinstance(header, dict) else None
    if not isinstance(kid, str):
        raise InvalidIdentityToken("no kid in the header")
    return kid
