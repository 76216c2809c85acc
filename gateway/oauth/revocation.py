"""OAuth 2.0 Token Revocation (RFC 7009): ``POST /revoke`` for public clients.

A client revokes only its own tokens: an access token alone, or a refresh token together with its whole
family (RFC 7009 §2.1: revoking a refresh token SHOULD also invalidate the access tokens of the same
grant). Anything else, unknown or someone else's, gets the same empty 200 (§2.2), so the endpoint is no
oracle. A storage fault is 503, never a 200 that claims a revocation that did not happen (§2.2.1).

Uses the ``GRANTS`` store of :mod:`gateway.oauth.token_endpoint` (filled from ``STORAGE`` by default).
"""

from __future__ import annotations

import logging

from aiohttp import web

from gateway.errors import NO_STORE
from gateway.oauth.context import OAUTH_SETTINGS
from gateway.oauth.errors import InvalidRequest, ServiceUnavailable
from gateway.oauth.limits import ENDPOINT_LIMITS
from gateway.oauth.token_endpoint import (
    GRANTS,
    RequestTooLarge,
    public_client_id,
    read_form,
    use_storage_by_default,
)
from gateway.oauth.token_formats import TokenType, classify
from gateway.revocation import REVOCATIONS, Revocation
from gateway.secrets_hashing import secret_hash
from gateway.security_events import revoked
from gateway.storage.base import StorageUnavailable
from gateway.storage.oauth import GrantStore

log = logging.getLogger("gateway.oauth.revocation")

MAX_TOKEN_CHARS = 4096


async def revoke(request: web.Request) -> web.Response:
    form = await read_form(request)
    client_id = public_client_id(request, form)
    limits = request.app[ENDPOINT_LIMITS]
    await limits.revoke(request)
    token = form.get("token")
    if token is None:
        raise InvalidRequest("token is required")
    if len(token) > MAX_TOKEN_CHARS:
        raise RequestTooLarge("The token is too long")
    # RFC 7009 §2.1: token_type_hint is only a hint; the type prefix already says what the token claims to be.
    clock = request.app[OAUTH_SETTINGS].clock
    try:
        revoked_own = await _revoke_own(request.app[GRANTS], token, client_id=client_id, now=clock.now())
    except StorageUnavailable as exc:
        # RFC 7009 §2.2.1: 503 tells the client the token may still be valid and to retry.
        raise ServiceUnavailable("Revocation service unavailable, retry shortly") from exc
    if revoked_own is None:
        # Only requests that revoke nothing count per (client, address): a client's own revocation always works.
        await limits.revoke_failed(request, client_id)
    else:
        user_id, family_id = revoked_own
        await request.app[REVOCATIONS].announce(Revocation(user_id, clock.now(), family_ids=(family_id,)))
        revoked(
            request.app,
            source="rfc7009",
            actor=f"client:{client_id}",
            user_id=user_id,
            client_id=client_id,
            family_id=family_id,
            reason="revoked_by_client",
        )
    # RFC 7009 §2.2: 200 whether or not there was anything to revoke.
    return web.Response(status=200, headers=NO_STORE)


async def _revoke_own(grants: GrantStore, token: str, *, client_id: str, now: float) -> tuple[str, str] | None:
    """Revoke ``token`` if it is the client's own; the (user id, family id) it belonged to when it was."""
    kind = classify(token)
    if kind is TokenType.ACCESS:
        access = await grants.get_access_token(secret_hash(token))
        # RFC 7009 §2.1: the token must have been issued to the requesting client.
        if access is not None and access.client_id == client_id:
            if not await grants.revoke_access_token(access.token_hash, now=now):
                return None
            # Announced by family: replicas re-check that family's cached tokens against storage.
            return access.user_id, access.family_id
    elif kind is TokenType.REFRESH:
        refresh = await grants.get_refresh_token(secret_hash(token))
        family = await grants.get_family(refresh.family_id) if refresh is not None else None
        if (
            family is not None
            and family.client_id == client_id
            and await grants.revoke_family(family.family_id, now=now, reason="revoked_by_client")
        ):
            log.info("token family revoked by its client", extra={"family_id": family.family_id})
            return family.user_id, family.family_id
    return None


def setup_revocation(app: web.Application) -> None:
    """Prepare ``POST /revoke`` (its route and CORS preflight are in ``gateway.routes``)."""
    use_storage_by_default(app)
