"""``/v1/proxy/{service}/{path}``: an app calls a provider's API with the user's vaulted credential.

The request carries the app's key (``X-API-Key``) and the user's identity token (``Authorization: Bearer``); both
are verified and must agree (the token's ``api_key_id`` is the key's id; its ``sub``, the user whose connection is
used, is any user the app signed in). Then the path is checked (``paths.py``: nothing outside ``api_base`` is ever
called), the key's account's quota charged (the one counter), and the request sent with the vaulted access
token — refreshed first when it expired or is about to,
and once more after a provider 401 — and only the configured request headers. The answer streams back without
hop-by-hop fields and ``Set-Cookie``. The key, the identity token and cookies never leave the gateway.
"""

from __future__ import annotations

import logging
from typing import Final

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from gateway.appkeys import CLOCK
from gateway.credentials import Presented, Principal
from gateway.credentials.extract import API_KEY_HEADER
from gateway.credentials.principal import Refusal
from gateway.credentials.setup import AUTHENTICATOR
from gateway.errors import InvalidToken, ServiceUnavailable
from gateway.identity.tokens import InvalidIdentityToken
from gateway.quota.setup import QUOTA_GATE
from gateway.storage.base import StorageUnavailable
from gateway.vault.config import NEVER_FORWARDED, ServiceConfig
from gateway.vault.errors import (
    MethodNotAllowed,
    ProviderUnavailable,
    ServiceNotConnected,
    ServiceReconnectRequired,
    UnknownService,
    VaultUnavailable,
)
from gateway.vault.paths import upstream_url
from gateway.vault.refresh import RefreshUnavailable
from gateway.vault.setup import VAULT, VaultServices
from gateway.vault.singleflight import LockTimeout
from gateway.vault.vault import Connection, VaultLocked

log = logging.getLogger("gateway.vault")

PREFIX: Final = "/v1/proxy"
REFRESH_MARGIN: Final = 30.0
"""Seconds before its expiry an access token is refreshed rather than sent (at most a fifth of its lifetime)."""
PROVIDER_TIMEOUT: Final = 30.0
HOP_BY_HOP: Final = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
     "transfer-encoding", "upgrade", "set-cookie", "set-cookie2", "content-length"}
)  # fmt: skip
_BEARER_PREFIX = "bearer "


async def proxy(request: web.Request) -> web.StreamResponse:
    services: VaultServices = request.app[VAULT]
    name = request.match_info["service"]
    service = services.services.get(name)
    if service is None:
        raise UnknownService("No such service is configured")
    target = upstream_url(service.api_base, request.raw_path, f"{PREFIX}/{name}/")
    if request.method not in service.methods:
        raise MethodNotAllowed(f"{request.method} is not allowed for this service")
    principal, subject = await _authenticate(request, services)
    connection = await _connection(services, subject, service.name)
    admission = await request.app[QUOTA_GATE].admit(principal, 1)
    body = await request.read() if request.body_exists else None
    now = request.app[CLOCK].now()
    refreshed = False
    if _expiring(connection, now):
        connection, refreshed = await _refresh(services, connection), True
    response = await _send(services, request, service, target, connection, body)
    if response.status == 401 and not refreshed:
        response.release()
        connection = await _refresh(services, connection)
        response = await _send(services, request, service, target, connection, body)
    if not await services.vault.exists(subject, service.name):  # disconnected while in flight (any replica)
        response.release()
        raise ServiceNotConnected(f"The user has disconnected {service.name}")
    await services.vault.touch(connection)
    try:
        return await _relay(request, response, services.label(service.name), admission.headers)
    finally:
        response.release()


def _expiring(connection: Connection, now: float) -> bool:
    expires_at = connection.tokens.expires_at
    if expires_at is None:
        return False
    margin = min(REFRESH_MARGIN, max(0.0, expires_at - connection.issued_at) / 5)
    return expires_at - now < margin


async def _authenticate(request: web.Request, services: VaultServices) -> tuple[Principal, str]:
    """The key (through the credential layer's verifier and cache) and the user (``sub``) of the identity token
    issued to it: the key's account is charged, the user's connection used (an app's users are not its owner)."""
    challenge = {"WWW-Authenticate": 'Bearer realm="mcp-gateway", error="invalid_token"'}
    keys = request.headers.getall(API_KEY_HEADER, [])
    authorizations = request.headers.getall("Authorization", [])
    if len(keys) != 1 or len(authorizations) != 1 or not authorizations[0].lower().startswith(_BEARER_PREFIX):
        raise InvalidToken("Send the app's X-API-Key and the user's identity token as Bearer", headers=challenge)
    authn = request.app[AUTHENTICATOR]
    verifier = next((v for v in authn.verifiers if v.kind == "api_key"), None)
    presented = Presented(keys[0].strip(), API_KEY_HEADER)
    if verifier is None or not verifier.matches(presented.raw) or verifier.refuse_early(presented) is not None:
        raise InvalidToken("The API key is not valid", headers=challenge)
    try:
        verified = await authn.cache.validation(presented.digest, lambda: verifier.verify(presented))
    except StorageUnavailable as exc:
        raise ServiceUnavailable("The credential store is unavailable, retry shortly") from exc
    now = request.app[CLOCK].now()
    if isinstance(verified, Refusal) or (verified.expires_at is not None and now >= verified.expires_at):
        raise InvalidToken("The API key is unknown, expired or revoked", headers=challenge)
    principal = verified.principal
    try:
        claims = await services.verify_identity_token(authorizations[0][len(_BEARER_PREFIX) :].strip())
    except InvalidIdentityToken as exc:
        raise InvalidToken("The identity token is not valid", headers=challenge) from exc
    subject = claims.get("sub")
    if claims.get("api_key_id") != principal.credential_id or not isinstance(subject, str):
        raise InvalidToken("The identity token was not issued to this API key", headers=challenge)
    verifier.record_use(principal, now)
    return principal, subject


async def _connection(services: VaultServices, user_id: str, service: str) -> Connection:
    try:
        connection = await services.vault.connection(user_id, service)
    except VaultLocked as exc:
        log.error("vault: %s", exc)
        raise VaultUnavailable("The stored credential cannot be read; the operator has been told") from exc
    if connection is None:
        raise ServiceNotConnected(f"The user has not connected {service}")
    if connection.broken:
        raise ServiceReconnectRequired(f"The user must reconnect {service}")
    return connection


async def _refresh(services: VaultServices, connection: Connection) -> Connection:
    try:
        fresh = await services.refresher.fresh(connection)
    except (RefreshUnavailable, LockTimeout) as exc:
        log.warning("vault: refresh of %s failed: %s", connection.service, exc)
        raise ProviderUnavailable("The provider is unavailable, retry shortly") from exc
    except VaultLocked as exc:
        raise VaultUnavailable("The stored credential cannot be read; the operator has been told") from exc
    if fresh.broken:
        raise ServiceReconnectRequired(f"The user must reconnect {connection.service}")
    return fresh


async def _send(
    services: VaultServices,
    request: web.Request,
    service: ServiceConfig,
    target: object,
    connection: Connection,
    body: bytes | None,
) -> aiohttp.ClientResponse:
    allowed = {h.lower() for h in service.forward_headers} - NEVER_FORWARDED
    headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() in allowed)
    headers["Authorization"] = f"Bearer {connection.tokens.access_token}"
    try:
        return await services.session.request(
            request.method,
            target,  # type: ignore[arg-type]
            headers=headers,
            data=body,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=PROVIDER_TIMEOUT),
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        services.metrics.vault_proxied.labels(service=services.label(service.name), status_class="5xx").inc()
        raise ProviderUnavailable("The provider's API did not answer") from exc


async def _relay(
    request: web.Request, upstream: aiohttp.ClientResponse, label: str, extra: dict[str, str]
) -> web.StreamResponse:
    response = web.StreamResponse(status=upstream.status)
    for key, value in upstream.headers.items():
        if key.lower() not in HOP_BY_HOP:
            response.headers.add(key, value)
    response.headers.update(extra)
    request.app[VAULT].metrics.vault_proxied.labels(service=label, status_class=f"{upstream.status // 100}xx").inc()
    await response.prepare(request)
    async for chunk in upstream.content.iter_chunked(64 * 1024):
        await response.write(chunk)
    await response.write_eof()
    return response
