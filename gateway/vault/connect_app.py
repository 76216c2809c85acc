"""Connect and disconnect services for an app that signed a user in (the app flow), with its key and the user's
identity token:

    GET    /v1/auth/{provider}/initiate?service=NAME&redirect_uri=URL[&state=S]
           X-API-Key + Authorization: Bearer <identity token>       → 302 (or JSON) to the provider
    GET    /v1/auth/services/callback                                (the provider) → 302 to URL?service=NAME&state=S
    DELETE /v1/auth/{service}   X-API-Key + Authorization: Bearer <identity token>  → 204 (404: not connected)

``initiate`` without an ``Authorization`` header is the app flow's sign-in, unchanged; with one, ``service`` is
required and names the service to connect (its provider must be the path's). The redirect URI must be one of the
key's callback URLs, as for sign-in. The pending sign-in travels in the provider's ``state``, sealed with the
vault's key (AES-GCM: the PKCE verifier is never readable outside the gateway, the blob cannot be forged and it
names the user, the key and the callback URL); a code can be redeemed only once at the provider.
"""

from __future__ import annotations

import json
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aiohttp import web

from gateway.appkeys import CLOCK, CONFIG, STORAGE
from gateway.audit import AUDIT
from gateway.errors import NO_STORE, NotFound, ServiceUnavailable
from gateway.identity import app_flow
from gateway.identity.app_callbacks import allows
from gateway.identity.provider_http import ProviderError
from gateway.identity.providers import PENDING_TTL, PendingAuthorization
from gateway.identity.sealing import UnsealError
from gateway.oauth.errors import InvalidRequest
from gateway.vault.connect import service_client
from gateway.vault.proxy import _authenticate as proxy_authenticate
from gateway.vault.revoke import disconnect_service
from gateway.vault.setup import VAULT
from gateway.vault.vault import VaultLocked

APP_CALLBACK_PATH: Final = "/v1/auth/services/callback"
DISCONNECT_PATH: Final = "/v1/auth/{service}"
_AD: Final = b"vault-app-connect"


async def identity_of(request: web.Request) -> tuple[str, dict[str, Any]]:
    """The presenting key's id and the user (``sub``) of the identity token issued to it (401 otherwise): the
    same check as ``/v1/proxy`` (the key alone through the credential layer, then the token)."""
    principal, subject = await proxy_authenticate(request, request.app[VAULT])
    return principal.credential_id, {"sub": subject}


def _callback_url(request: web.Request) -> str:
    return request.app[CONFIG].public_url.rstrip("/") + APP_CALLBACK_PATH


async def initiate(request: web.Request) -> web.StreamResponse:
    """The app flow's ``initiate``; with an identity token, the connect flow for ``?service=NAME``."""
    if "Authorization" not in request.headers:
        return await app_flow.initiate(request)
    key_id, claims = await identity_of(request)
    services = request.app[VAULT]
    name = request.query.get("service", "")
    service = services.services.get(name)
    if service is None:
        raise InvalidRequest("service names no configured service")
    if service.provider != request.match_info["provider"]:
        raise InvalidRequest("service is not served by this provider")
    redirect_uri, app_state = await app_flow.app_callback(request, key_id)
    client = service_client(services, request.app, name)
    try:
        url, pending = await client.begin(_callback_url(request))
    except ProviderError as exc:
        raise ServiceUnavailable("The provider is unavailable, retry shortly") from exc
    plain = json.dumps(
        {
            "u": claims["sub"],
            "k": key_id,
            "s": name,
            "r": redirect_uri,
            "as": app_state,
            "cv": pending.code_verifier,
            "n": pending.nonce,
            "t": pending.created_at,
        }
    ).encode()
    key, blob = request.app[VAULT].sealing_keys().seal(plain, associated_data=_AD)
    parts = urlsplit(url)
    query = [(k, f"{key}.{blob}" if k == "state" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    url = urlunsplit(parts._replace(query=urlencode(query)))
    if "application/json" in request.headers.get("Accept", ""):
        return web.json_response({"authorization_url": url}, headers=NO_STORE)
    return web.Response(status=302, headers={"Location": url, **NO_STORE})


async def callback(request: web.Request) -> web.StreamResponse:
    state = request.query.get("state", "")
    key_id, _, blob = state.partition(".")
    try:
        data = json.loads(request.app[VAULT].sealing_keys().unseal(key_id, blob, associated_data=_AD))
    except (UnsealError, ValueError) as exc:
        raise app_flow.SignInLinkInvalid("This connection link is not valid here. Go back to the app.") from exc
    store, now = request.app[STORAGE], request.app[CLOCK].now()
    key = await store.get_api_key(str(data["k"]))
    if key is None or not key.usable_at(now) or not allows(await store.get_key_app(key.id), str(data["r"])):
        raise app_flow.SignInLinkInvalid("The app this connection started from is no longer allowed to receive it.")
    if now - float(data["t"]) > PENDING_TTL:
        return app_flow.redirect_to_app(
            data["r"], {"error": "invalid_request", "error_description": "too slow", "state": data["as"]}
        )
    services = request.app[VAULT]
    name = str(data["s"])
    client = service_client(services, request.app, name)
    pending = PendingAuthorization(
        provider=client.config.name,
        state=state,
        code_verifier=data.get("cv"),
        nonce=data.get("n"),
        redirect_uri=_callback_url(request),
        created_at=float(data["t"]),
    )
    try:
        identity = await client.complete(pending, {k: request.query[k] for k in request.query})
        await services.vault.save_identity(str(data["u"]), name, identity)
        request.app[AUDIT].record(
            "service.connected", actor=str(data["k"]), user_id=str(data["u"]), service=name, source="app"
        )
    except ProviderError as exc:
        error = app_flow.app_error(exc)
        return app_flow.redirect_to_app(
            data["r"], {"error": error, "error_description": exc.description, "state": data["as"]}
        )
    except VaultLocked as exc:
        raise ServiceUnavailable("The vault is unavailable; the operator has been told") from exc
    return app_flow.redirect_to_app(data["r"], {"service": name, "state": data["as"]})


async def disconnect(request: web.Request) -> web.StreamResponse:
    key_id, claims = await identity_of(request)
    name = request.match_info["service"]
    if request.app[VAULT].services.get(name) is None:
        raise NotFound("No such service is configured")
    if not await disconnect_service(request.app, str(claims["sub"]), name, actor=key_id):
        raise NotFound("The user has not connected this service")
    return web.Response(status=204, headers=NO_STORE)
