"""Issuing tokens for a grant: the access/refresh pair of a token family and the RFC 6749 §5.1 response.

Lifetimes never outlive the family (OAuth 2.1 §4.3.3): the access token lives
``min(access_token_ttl, family's remaining life)`` and a refresh token's idle expiry is
``min(now + refresh_token_idle_ttl, family.expires_at)``; rotation never extends the family.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from gateway.config import OAuthConfig
from gateway.errors import NO_STORE
from gateway.oauth.token_formats import TokenType, mint
from gateway.secrets_hashing import new_id
from gateway.storage.oauth import AccessToken, AuthorizationCode, RefreshToken, TokenFamily

TOKEN_TYPE = "Bearer"  # noqa: S105 (the RFC 6750 token type, not a secret)


@dataclass(frozen=True, slots=True)
class TokenPair:
    """The secrets a client receives: only in the response and, sealed, in the grace blob."""

    access_token: str
    refresh_token: str
    access_expires_at: float
    scope: str
    """The access token's scope (a refresh may narrow it; the refresh token keeps the family's)."""

    def expires_in(self, now: float) -> int:
        return max(0, round(self.access_expires_at - now))


@dataclass(frozen=True, slots=True)
class Issued:
    """A freshly minted pair and the rows (hashes only) that make it valid once stored."""

    pair: TokenPair
    access: AccessToken
    refresh: RefreshToken


def new_family(code: AuthorizationCode, *, config: OAuthConfig, now: float) -> TokenFamily:
    """The grant a code's redemption creates, bound to everything the code was bound to."""
    return TokenFamily(
        family_id=new_id("fam"),
        user_id=code.user_id,
        client_id=code.client_id,
        redirect_uri=code.redirect_uri,
        scope=code.scope,
        resource=code.resource,
        created_at=now,
        # OAuth 2.1 §4.3.3: the absolute end of the grant; no refresh moves it.
        expires_at=now + config.refresh_token_absolute_ttl,
    )


def issue(family: TokenFamily, *, config: OAuthConfig, now: float, generation: int, scope: str | None = None) -> Issued:
    """Mint an access token (with ``scope`` when narrower than the family's) and the refresh token of
    ``generation`` for the family."""
    access_token, access_hash = mint(TokenType.ACCESS)
    refresh_token, refresh_hash = mint(TokenType.REFRESH)
    access_scope = scope if scope is not None else family.scope
    access_expires_at = min(now + config.access_token_ttl, family.expires_at)
    access = AccessToken(
        token_hash=access_hash,
        family_id=family.family_id,
        user_id=family.user_id,
        client_id=family.client_id,
        scope=access_scope,
        resource=family.resource,
        created_at=now,
        expires_at=access_expires_at,
    )
    refresh = RefreshToken(
        token_hash=refresh_hash,
        family_id=family.family_id,
        generation=generation,
        created_at=now,
        expires_at=min(now + config.refresh_token_idle_ttl, family.expires_at),
    )
    pair = TokenPair(
        access_token=access_token,
        refresh_token=refresh_token,
        access_expires_at=access_expires_at,
        scope=access_scope,
    )
    return Issued(pair=pair, access=access, refresh=refresh)


def token_response(pair: TokenPair, *, now: float, headers: dict[str, str] | None = None) -> web.Response:
    """RFC 6749 §5.1 successful response; §5.1 also requires ``Cache-Control: no-store`` and ``Pragma: no-cache``."""
    body = {
        "access_token": pair.access_token,
        "token_type": TOKEN_TYPE,
        "expires_in": pair.expires_in(now),
        "refresh_token": pair.refresh_token,
        "scope": pair.scope,
    }
    return web.json_response(body, headers={**NO_STORE, **(headers or {})})
