"""Token exchange (RFC 8693) at ``POST /v1/auth/token``: an upstream MCP server trades the identity JWT the gateway
sent it (``upstream.identity_header``, audience ``upstream.identity_audience``) for a short identity token the
proxy (``/v1/proxy``) accepts, bound to the upstream's own API key.

    POST /v1/auth/token   X-API-Key: <the upstream's service key>
         grant_type=urn:ietf:params:oauth:grant-type:token-exchange
         subject_token=<the X-MCP-Identity JWT>&subject_token_type=urn:ietf:params:oauth:token-type:jwt

Why an exchange and not the upstream JWT itself at the proxy: the two audiences stay apart (a token one side
receives is never accepted as the other's), and the exchange is where the extra conditions sit:

- the presenting key's owner is an operator account (role ``admin``: the operator's service account for the
  upstream, ``mcp-gateway users set-role``); an app's key cannot exchange anything;
- the subject token is the gateway's own upstream JWT (signature, issuer, the upstream audience, expiry) for an
  active user, and when it came from an API key, that key is still usable;
- the new token lives no longer than the subject token had left (at most five minutes), names the service key in
  ``api_key_id`` and the user in ``sub``, and lists the user's live ``connected_services``.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from gateway.appkeys import CLOCK, CONFIG, STORAGE
from gateway.errors import NO_STORE
from gateway.identity.tokens import IdentityTokens, InvalidIdentityToken
from gateway.identity.web import IDENTITY
from gateway.oauth.errors import InvalidGrant, InvalidRequest, UnauthorizedClient
from gateway.vault.listing import CONNECTED_SERVICES

TOKEN_EXCHANGE: Final = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 (a URN)
JWT_TYPE: Final = "urn:ietf:params:oauth:token-type:jwt"
MAX_LIFETIME: Final = 300
EXCHANGE_ROLE: Final = "admin"


def upstream_audience(app: web.Application) -> str:
    return app[CONFIG].upstream.audience


async def exchange(request: web.Request, form: dict[str, str], key_id: str) -> web.Response:
    app, store = request.app, request.app[STORAGE]
    now = app[CLOCK].now()
    key = await store.get_api_key(key_id)
    owner = await store.get_user(key.user_id) if key is not None else None
    if owner is None or owner.role != EXCHANGE_ROLE:
        raise UnauthorizedClient("This API key may not exchange tokens (its owner is not an operator account)")
    subject_token = form.get("subject_token")
    if not subject_token:
        raise InvalidRequest("subject_token is required")
    if form.get("subject_token_type") != JWT_TYPE:
        raise InvalidRequest(f"subject_token_type must be {JWT_TYPE}")
    config, identity = app[CONFIG], app[IDENTITY]
    verifier = IdentityTokens(identity.keys, app[CLOCK], issuer=config.issuer, audience=upstream_audience(app))
    try:
        claims = await verifier.verify(subject_token)
    except InvalidIdentityToken as exc:
        raise InvalidGrant("The subject token is not a valid upstream identity token of this gateway") from exc
    subject = claims.get("sub")
    if not isinstance(subject, str) or "scope" not in claims:
        raise InvalidGrant("The subject token is not an upstream identity token")
    user = await store.get_user(subject)
    if user is None or not user.active:
        raise InvalidGrant("The subject token's user is disabled")
    source_key = claims.get("api_key_id")
    if isinstance(source_key, str):
        row = await store.get_api_key(source_key)
        if row is None or not row.usable_at(now):
            raise InvalidGrant("The subject token's API key was revoked")
    lifetime = max(1, min(MAX_LIFETIME, int(claims["exp"]) - int(now)))
    listing = app.get(CONNECTED_SERVICES)
    connected = await listing(subject) if listing is not None else []
    minter = IdentityTokens(
        identity.keys, app[CLOCK], issuer=config.issuer, audience=config.identity.audience, lifetime=lifetime
    )
    token = await minter.mint(subject=subject, api_key_id=key_id, connected_services=connected)
    body = {
        "access_token": token,
        "issued_token_type": JWT_TYPE,
        "token_type": "Bearer",
        "expires_in": lifetime,
    }
    return web.json_response(body, headers=NO_STORE)
