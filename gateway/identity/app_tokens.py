"""The app flow's one-time codes, identity tokens and refresh tokens, on the OAuth server's grant machinery.

A code is an ``authorization_codes`` row and its redemption creates a ``token_families`` row (``resource`` =
``IDENTITY_RESOURCE``, ``client_id`` = the API key's id) with one refresh token: so redemption is one atomic
claim, a replayed code revokes what the first redemption issued, refresh tokens rotate with the same reuse
detection and replay window (``grace.judge_retired``) as ``/token``, and revoking a family raises the (key, user)
watermark that ``IdentityTokenVerifier`` checks. Codes and refresh tokens have their own prefixes (``idac_``,
``idrt_``), so ``/token`` refuses them by shape and these endpoints refuse OAuth's.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass

from aiohttp import web

from gateway.clock import Clock
from gateway.config import OAuthConfig
from gateway.identity.tokens import IdentityTokens, InvalidIdentityToken
from gateway.oauth import grace
from gateway.oauth.errors import InvalidGrant
from gateway.oauth.issuance import TokenPair
from gateway.revocation import REVOCATIONS, Revocation
from gateway.secrets_hashing import new_id, secret_hash
from gateway.security_events import reuse_detected, token_issued
from gateway.storage.app_flow import IDENTITY_RESOURCE, IDENTITY_SCOPE
from gateway.storage.base import UserStore
from gateway.storage.oauth import AccessToken, AuthorizationCode, GrantStore, RefreshToken, RotateOutcome, TokenFamily

log = logging.getLogger("gateway.identity.app")

CODE_TTL = 60.0
CODE_PREFIX = "idac_"
REFRESH_PREFIX = "idrt_"
_SHAPE = re.compile(r"^(idac_|idrt_)[A-Za-z0-9_-]{43}$")
_INVALID_CODE = "The code is invalid, expired or already used"
_INVALID_REFRESH = "The refresh token is invalid"


def _mint(prefix: str) -> tuple[str, str]:
    secret = prefix + secrets.token_urlsafe(32)
    return secret, secret_hash(secret)


def _shaped(candidate: str, prefix: str) -> bool:
    return len(candidate) <= 64 and _SHAPE.match(candidate) is not None and candidate.startswith(prefix)


@dataclass(frozen=True)
class _Issued:
    pair: TokenPair
    access: AccessToken
    refresh: RefreshToken


class AppTokens:
    def __init__(
        self,
        *,
        grants: GrantStore,
        users: UserStore,
        tokens: IdentityTokens,
        clock: Clock,
        oauth: OAuthConfig,
        app: web.Application,
    ) -> None:
        self._grants = grants
        self._users = users
        self._tokens = tokens
        self._clock = clock
        self._oauth = oauth
        self._app = app

    # codes

    async def new_code(self, *, user_id: str, api_key_id: str, redirect_uri: str) -> str:
        """A one-time code (``CODE_TTL`` seconds) bound to the key and the app's callback URL; stored hashed."""
        code, code_hash = _mint(CODE_PREFIX)
        now = self._clock.now()
        row = AuthorizationCode(
            code_hash=code_hash,
            client_id=api_key_id,
            user_id=user_id,
            redirect_uri=redirect_uri,
            redirect_uri_given=True,
            code_challenge="",  # never verifies at /token (no S256 challenge): the code is only good here
            scope=IDENTITY_SCOPE,
            resource=IDENTITY_RESOURCE,
            created_at=now,
            expires_at=now + CODE_TTL,
        )
        await self._grants.create_code(row)
        return code

    async def redeem(self, code: str, *, api_key_id: str, redirect_uri: str | None) -> TokenPair:
        """The identity token and refresh token a code is worth, once. A replay (by the same key, to the same
        callback URL) revokes what the first redemption issued."""
        if not _shaped(code, CODE_PREFIX):
            raise InvalidGrant(_INVALID_CODE)
        now = self._clock.now()
        code_hash = secret_hash(code)
        row = await self._grants.get_code(code_hash)
        if row is None or row.resource != IDENTITY_RESOURCE or row.client_id != api_key_id:
            raise InvalidGrant(_INVALID_CODE)
        if redirect_uri != row.redirect_uri:
            raise InvalidGrant("redirect_uri does not match the one the code was issued for")
        if row.used_at is not None:
            await self._revoke_replayed(row.user_id, api_key_id, row.family_id, "code_reuse")
            raise InvalidGrant(_INVALID_CODE)
        if now >= row.expires_at:
            raise InvalidGrant(_INVALID_CODE)
        await self._require_active_user(row.user_id)
        family = TokenFamily(
            family_id=new_id("fam"),
            user_id=row.user_id,
            client_id=api_key_id,
            redirect_uri=row.redirect_uri,
            scope=IDENTITY_SCOPE,
            resource=IDENTITY_RESOURCE,
            created_at=now,
            expires_at=now + self._oauth.refresh_token_absolute_ttl,
        )
        issued = await self._issue(family, generation=1, now=now)
        won = await self._grants.redeem_code(
            code_hash, now=now, family=family, access=issued.access, refresh=issued.refresh
        )
        if not won:
            claimed = await self._grants.get_code(code_hash)
            if claimed is not None:
                await self._revoke_replayed(claimed.user_id, api_key_id, claimed.family_id, "code_reuse")
            raise InvalidGrant(_INVALID_CODE)
        self._issued_event("authorization_code", family, 1)
        return issued.pair

    # refresh

    async def refresh(self, token: str, *, api_key_id: str) -> TokenPair:
        """Rotate a refresh token of the key's family (OAuth's rotation, reuse detection and replay window);
        another key presenting it revokes the family."""
        if not _shaped(token, REFRESH_PREFIX):
            raise InvalidGrant(_INVALID_REFRESH)
        now = self._clock.now()
        token_hash = secret_hash(token)
        row = await self._grants.get_refresh_token(token_hash)
        family = await self._grants.get_family(row.family_id) if row is not None else None
        if row is None or family is None or family.resource != IDENTITY_RESOURCE:
            raise InvalidGrant(_INVALID_REFRESH)
        live = family.revoked_at is None and now < family.expires_at
        if family.client_id != api_key_id:
            if live:  # a live refresh token in another key's hands has leaked
                await self._revoke_replayed(family.user_id, family.client_id, family.family_id, "client_mismatch")
            raise InvalidGrant(_INVALID_REFRESH)
        if not live:
            raise InvalidGrant(_INVALID_REFRESH)
        await self._require_active_user(family.user_id)
        issued = await self._issue(family, generation=row.generation + 1, now=now)
        outcome = await self._grants.rotate_refresh_token(
            token_hash,
            now=now,
            access=issued.access,
            refresh=issued.refresh,
            grace_until=now + self._oauth.refresh_grace_seconds,
            grace_blob=grace.seal(token, issued.pair),
        )
        if outcome is RotateOutcome.ROTATED:
            self._issued_event("refresh_token", family, row.generation + 1)
            return issued.pair
        if outcome is RotateOutcome.RETIRED:
            judged = await grace.judge_retired(
                self._grants,
                token,
                token_hash,
                family.family_id,
                now=now,
                max_replays=self._oauth.refresh_grace_max_replays,
            )
            if isinstance(judged, TokenPair):
                return judged
            if judged is grace.Retired.BUSY:
                raise InvalidGrant("The refresh token was already used")
            await self._revoke_replayed(family.user_id, family.client_id, family.family_id, "refresh_reuse")
        raise InvalidGrant(_INVALID_REFRESH)

    # revocation (RFC 7009)

    async def revoke(self, token: str, *, api_key_id: str) -> None:
        """Revoke the family of a refresh token, or every family of (key, user) for an identity token; tokens
        that are unknown, another key's, or already revoked are ignored (RFC 7009 §2.2)."""
        now = self._clock.now()
        if _shaped(token, REFRESH_PREFIX):
            row = await self._grants.get_refresh_token(secret_hash(token))
            family = await self._grants.get_family(row.family_id) if row is not None else None
            if family is None or family.resource != IDENTITY_RESOURCE or family.client_id != api_key_id:
                return
            if await self._grants.revoke_family(family.family_id, now=now, reason="app_revoked"):
                await self._announce(family.user_id, (family.family_id,))
            return
        try:
            claims = await self._tokens.verify(token)
        except InvalidIdentityToken:
            return
        if claims.get("api_key_id") != api_key_id or not isinstance(claims.get("sub"), str):
            return
        user_id = str(claims["sub"])
        revoked = await self._grants.revoke_user_families(user_id, now=now, reason="app_revoked", client_id=api_key_id)
        if revoked:
            await self._announce(user_id, tuple(revoked))

    # helpers

    async def _issue(self, family: TokenFamily, *, generation: int, now: float) -> _Issued:
        jwt = await self._tokens.mint(subject=family.user_id, api_key_id=family.client_id, connected_services=())
        refresh, refresh_hash = _mint(REFRESH_PREFIX)
        expires_at = now + self._tokens.lifetime
        access = AccessToken(
            token_hash=secret_hash(jwt),  # a record only: JWTs are never looked up by hash
            family_id=family.family_id,
            user_id=family.user_id,
            client_id=family.client_id,
            scope=IDENTITY_SCOPE,
            resource=IDENTITY_RESOURCE,
            created_at=now,
            expires_at=expires_at,
        )
        refresh_row = RefreshToken(
            token_hash=refresh_hash,
            family_id=family.family_id,
            generation=generation,
            created_at=now,
            expires_at=min(now + self._oauth.refresh_token_idle_ttl, family.expires_at),
        )
        pair = TokenPair(access_token=jwt, refresh_token=refresh, access_expires_at=expires_at, scope=IDENTITY_SCOPE)
        return _Issued(pair, access, refresh_row)

    async def _require_active_user(self, user_id: str) -> None:
        user = await self._users.get_user(user_id)
        if user is None or not user.active:
            raise InvalidGrant("The grant is no longer valid")

    async def _revoke_replayed(self, user_id: str, api_key_id: str, family_id: str | None, reason: str) -> None:
        if family_id is None or not await self._grants.revoke_family(family_id, now=self._clock.now(), reason=reason):
            return
        await self._announce(user_id, (family_id,), source="reuse")
        log.warning("app flow: %s", reason, extra={"event": f"{reason}_detected", "family_id": family_id})
        reuse_detected(self._app, user_id=user_id, client_id=api_key_id, family_id=family_id, reason=reason)

    async def _announce(self, user_id: str, family_ids: tuple[str, ...], source: str = "rfc7009") -> None:
        revocation = Revocation(user_id, self._clock.now(), family_ids=family_ids, source=source)
        await self._app[REVOCATIONS].announce(revocation)

    def _issued_event(self, grant_type: str, family: TokenFamily, generation: int) -> None:
        token_issued(
            self._app,
            grant_type=grant_type,
            user_id=family.user_id,
            client_id=family.client_id,
            family_id=family.family_id,
            generation=generation,
        )


def token_body(pair: TokenPair, *, now: float) -> dict[str, str | int]:
    """The app flow's token response (RFC 6749 §5.1 shape)."""
    return {
        "access_token": pair.access_token,
        "token_type": "Bearer",
        "expires_in": pair.expires_in(now),
        "refresh_token": pair.refresh_token,
    }
