"""Disconnecting a service: revoke the grant at the provider (RFC 7009, where its discovery document names a
``revocation_endpoint``), then delete the vault row.

The row is deleted whatever the provider answers (the person asked for it; a provider that is down must not keep
the gateway using the credential). The proxy reads the row on every call, and again before relaying a provider's
answer, so from the delete's commit on every replica refuses the service (``service_not_connected``), calls in
flight included: nothing is cached per connection, so nothing is announced on the revocation bus. The refresh token is
revoked first (RFC 7009 §2.1: that revokes the grant and its access tokens at providers that tie them), then the
access token, for providers that do not.
"""

from __future__ import annotations

import base64
import logging
from urllib.parse import quote

import aiohttp
from aiohttp import web

from gateway.appkeys import CONFIG
from gateway.audit import AUDIT
from gateway.identity.provider_config import ProviderConfig
from gateway.identity.provider_http import ProviderError, fetch_json
from gateway.vault.setup import VAULT
from gateway.vault.vault import VaultLocked

log = logging.getLogger("gateway.vault")

REVOKE_TIMEOUT = 10.0


async def revocation_endpoint(session: aiohttp.ClientSession, provider: ProviderConfig) -> str | None:
    if not provider.issuer:
        return None  # plain OAuth 2 (GitHub): no RFC 7009 endpoint
    url = provider.issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        document = await fetch_json(session, "GET", url, what="the provider's discovery document")
    except ProviderError:
        return None
    endpoint = document.get("revocation_endpoint") if isinstance(document, dict) else None
    return endpoint if isinstance(endpoint, str) and endpoint.startswith(("https://", "http://127.0.0.1")) else None


async def revoke_at_provider(
    session: aiohttp.ClientSession, provider: ProviderConfig, tokens: list[tuple[str, str]]
) -> bool:
    """POST each ``(token, hint)`` to the provider's revocation endpoint; True when every one answered 200."""
    endpoint = await revocation_endpoint(session, provider)
    if endpoint is None:
        return False
    pair = f"{quote(provider.client_id, safe='')}:{quote(provider.client_secret, safe='')}"
    headers = {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
    ok = True
    for token, hint in tokens:
        try:
            async with session.post(
                endpoint,
                data={"token": token, "token_type_hint": hint},
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=REVOKE_TIMEOUT),
            ) as response:
                ok = ok and response.status == 200
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("vault: revocation at %s failed: %s", provider.name, type(exc).__name__)
            ok = False
    return ok


async def disconnect_service(app: web.Application, user_id: str, service: str, *, actor: str | None = None) -> bool:
    """Revoke and delete ``user_id``'s connection to ``service``; False when there was none. ``actor``: who asked
    (the user, or the app's key id), for the audit log."""
    services = app[VAULT]
    found = services.services.get(service)
    provider = app[CONFIG].identity_providers.get(found.provider) if found is not None else None
    revoked = False
    try:
        connection = await services.vault.connection(user_id, service)
    except VaultLocked:
        connection = None  # unreadable: nothing to revoke with, but the row still goes
        log.warning("vault: disconnecting %s without revoking (the row cannot be unsealed)", service)
    if connection is not None and provider is not None:
        tokens = [(connection.tokens.access_token, "access_token")]
        if connection.tokens.refresh_token:
            tokens.insert(0, (connection.tokens.refresh_token, "refresh_token"))
        revoked = await revoke_at_provider(services.session, provider, tokens)
    deleted = await services.vault.disconnect(user_id, service)
    if deleted:
        revoked_at_provider = "yes" if revoked else "no"
        app[AUDIT].record(
            "service.disconnected", actor=actor, user_id=user_id, service=service, revoked=revoked_at_provider
        )
    return deleted
