"""Connect and disconnect services from the dashboard (``/account``), and the connect link an MCP tool hands out.

    POST /account/services/{service}/connect      (session + CSRF) → 303 to the provider (the service's scopes,
                                                   ``offline_access`` and ``prompt=consent``)
    GET  /account/services/callback                (the provider) → tokens saved in the vault → 303 /account
    POST /account/services/{service}/disconnect   (session + CSRF) → revoked at the provider, row deleted
    GET  /account/connect/{service}?for=USER_ID    the link an upstream tool returns when a service is missing:
                                                   a page with one Connect button, only for that signed-in user

The pending provider sign-in (state, PKCE verifier, nonce) lives in a cookie sealed with the vault's key
(``identity.encryption_keys``), bound to the user who started it: the callback completes only in that browser
and only while the same person is signed in. The connect link carries only a service name and a user id (not a
secret); opening it signed in as anyone else is refused.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import replace
from typing import Any, Final

from aiohttp import web

from gateway.appkeys import CLOCK, CONFIG
from gateway.audit import AUDIT
from gateway.dashboard.context import ACCOUNT_PATH, DASHBOARD, SIGNIN_PATH
from gateway.errors import Forbidden, InvalidRequest, NotFound, ServiceUnavailable, Unauthorized
from gateway.identity.provider_http import ProviderError
from gateway.identity.providers import PENDING_TTL, PendingAuthorization, ProviderClient
from gateway.identity.sealing import UnsealError
from gateway.vault.revoke import disconnect_service
from gateway.vault.setup import VAULT, VaultServices
from gateway.vault.vault import VaultLocked
from gateway.web_pages import clear_cookie, render, see_other, set_cookie

log = logging.getLogger("gateway.vault")

SERVICES_PATH: Final = ACCOUNT_PATH + "/services"
CONNECT_CALLBACK_PATH: Final = SERVICES_PATH + "/callback"
CONNECT_LINK_PATH: Final = ACCOUNT_PATH + "/connect"
PENDING_COOKIE: Final = "__Host-gw_connect"
_AD: Final = b"vault-connect"


def connect_link(public_url: str, service: str, user_id: str) -> str:
    """The URL an upstream tool gives a user whose ``service`` is not connected (MCP URL-mode elicitation)."""
    return f"{public_url.rstrip('/')}{CONNECT_LINK_PATH}/{service}?for={user_id}"


def service_client(services: VaultServices, app: web.Application, name: str) -> ProviderClient:
    """A provider client asking for the service's scopes, with ``offline_access`` (OpenID providers) and a consent
    prompt, so the provider grants a refresh token."""
    service = services.services.get(name)
    config = app[CONFIG]
    provider = config.identity_providers.get(service.provider) if service is not None else None
    if service is None or provider is None:
        raise NotFound("No such service is configured")
    scopes = tuple(dict.fromkeys(service.scopes or provider.scopes))
    if provider.oidc:
        scopes = tuple(dict.fromkeys(("openid", *scopes, "offline_access")))
    params = dict(provider.authorization_params)
    params.setdefault("prompt", "consent")
    if provider.name == "google":
        params.setdefault("access_type", "offline")
    tuned = replace(provider, scopes=scopes, authorization_params=tuple(params.items()))
    return ProviderClient(tuned, services.session, app[CLOCK])


def _callback_url(app: web.Application) -> str:
    return app[CONFIG].public_url.rstrip("/") + CONNECT_CALLBACK_PATH


async def connect_start(request: web.Request) -> web.StreamResponse:
    """Connect or Reconnect: a signed-in form post sends the browser to the provider."""
    dashboard = request.app[DASHBOARD]
    user, _ = await dashboard.signed_in_form(request)
    name = request.match_info["service"]
    client = service_client(request.app[VAULT], request.app, name)
    try:
        url, pending = await client.begin(_callback_url(request.app))
    except ProviderError as exc:
        raise ServiceUnavailable("The provider is unavailable, retry shortly") from exc
    plain = json.dumps(
        {
            "u": user.id,
            "s": name,
            "st": pending.state,
            "cv": pending.code_verifier,
            "n": pending.nonce,
            "t": pending.created_at,
        }
    ).encode()
    key_id, blob = request.app[VAULT].sealing_keys().seal(plain, associated_data=_AD)
    response = see_other(url)
    set_cookie(response, PENDING_COOKIE, f"{key_id}.{blob}", max_age=int(PENDING_TTL))
    return response


def _pending(request: web.Request) -> dict[str, Any]:
    value = request.cookies.get(PENDING_COOKIE, "")
    key_id, _, blob = value.partition(".")
    try:
        data = json.loads(request.app[VAULT].sealing_keys().unseal(key_id, blob, associated_data=_AD))
    except (UnsealError, ValueError) as exc:
        raise InvalidRequest("This connection was not started in this browser. Start it again.") from exc
    if not isinstance(data, dict):
        raise InvalidRequest("This connection was not started in this browser. Start it again.")
    return data


async def connect_callback(request: web.Request) -> web.StreamResponse:
    dashboard = request.app[DASHBOARD]
    user = await dashboard.logins.current_user(request)
    if user is None:
        raise Unauthorized("Your session has ended. Sign in again and connect the service again.")
    data = _pending(request)
    if data.get("u") != user.id:
        raise Forbidden("This connection was started by another account. Start it again.")
    name = str(data.get("s"))
    services = request.app[VAULT]
    client = service_client(services, request.app, name)
    pending = PendingAuthorization(
        provider=client.config.name,
        state=str(data.get("st")),
        code_verifier=data.get("cv"),
        nonce=data.get("n"),
        redirect_uri=_callback_url(request.app),
        created_at=float(data.get("t", 0)),
    )
    try:
        identity = await client.complete(pending, {k: request.query[k] for k in request.query})
    except ProviderError as exc:
        log.info("vault: connecting %s failed: %s", name, exc.code)
        response = see_other(f"{ACCOUNT_PATH}?done=service-failed")
        clear_cookie(response, PENDING_COOKIE)
        return response
    try:
        await services.vault.save_identity(user.id, name, identity)
    except VaultLocked as exc:
        raise ServiceUnavailable("The vault is unavailable; the operator has been told") from exc
    request.app[AUDIT].record("service.connected", actor=user.id, user_id=user.id, service=name, source="dashboard")
    response = see_other(f"{ACCOUNT_PATH}?done=service-connected")
    clear_cookie(response, PENDING_COOKIE)
    return response


async def disconnect(request: web.Request) -> web.StreamResponse:
    dashboard = request.app[DASHBOARD]
    user, _ = await dashboard.signed_in_form(request)
    name = request.match_info["service"]
    services = request.app[VAULT]
    if services.services.get(name) is None:
        raise NotFound("No such service is configured")
    if not await disconnect_service(request.app, user.id, name, actor=user.id):
        raise NotFound("This service is not connected.")
    return see_other(f"{ACCOUNT_PATH}?done=service-disconnected")


async def connect_link_page(request: web.Request) -> web.StreamResponse:
    """The page behind ``connect_link``: the signed-in user must be the one the link was made for."""
    name = request.match_info["service"]
    services = request.app[VAULT]
    if services.services.get(name) is None:
        raise NotFound("No such service is configured")
    dashboard = request.app[DASHBOARD]
    user = await dashboard.logins.current_user(request)
    if user is None:
        return see_other(SIGNIN_PATH)
    meant_for = request.query.get("for", "")
    if not secrets.compare_digest(meant_for.encode(), user.id.encode()):
        raise Forbidden("This link was made for another account. Sign in with that account to connect.")
    return render(
        "connect_service.html",
        service=name,
        action=f"{SERVICES_PATH}/{name}/connect",
        csrf=dashboard.session_csrf(request),
    )
