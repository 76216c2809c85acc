"""The app flow: an app holding an API key signs its users in through a provider and gets identity tokens.

    GET  /v1/auth/{provider}/initiate?redirect_uri=URL[&state=S]   X-API-Key   → 302 to the provider
    GET  /v1/auth/{provider}/callback                              (the provider) → 302 to URL?code=…&state=S
    POST /v1/auth/token    X-API-Key  grant_type=authorization_code&code=…&redirect_uri=URL   → tokens (JSON)
    POST /v1/auth/token    X-API-Key  grant_type=refresh_token&refresh_token=…                → new tokens
    POST /v1/auth/revoke   X-API-Key  token=…                                                 → 200 (RFC 7009)

``redirect_uri`` must be one of the key's callback URLs (``keys create --redirect-uri``): otherwise 400 and no
redirect, ever. Errors after the provider reach the app as ``error=`` on its (still allowed) callback URL, or a
page when there is none. A key set to ``tokens_in_url`` gets the tokens in the callback URL instead of a code
(see ``TOKENS_IN_URL_RISK``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from gateway.appkeys import CLOCK, CONFIG, STORAGE
from gateway.audit import AUDIT
from gateway.credentials.extract import API_KEY_HEADER
from gateway.credentials.setup import AUTHENTICATOR, WATERMARK
from gateway.errors import NO_STORE, GatewayError, NotFound, ServiceUnavailable
from gateway.identity.app_callbacks import allows
from gateway.identity.app_tokens import AppTokens, token_body
from gateway.identity.app_verify import IDENTITY_VERIFIER, IdentityTokenVerifier
from gateway.identity.linking import AccountRefused, account_for
from gateway.identity.pending_seal import open_verifier, seal_verifier
from gateway.identity.provider_http import ProviderError
from gateway.identity.providers import PENDING_TTL, PendingAuthorization, ProviderClient
from gateway.identity.signing_keys import SigningUnavailable
from gateway.identity.web import IDENTITY
from gateway.oauth.errors import InvalidClient, InvalidRequest, UnsupportedGrantType
from gateway.oauth.token_endpoint import read_form
from gateway.revocation import REVOCATIONS
from gateway.secrets_hashing import secret_hash
from gateway.storage.app_flow import AppSignIn
from gateway.storage.base import StorageUnavailable
from gateway.vault.exchange import TOKEN_EXCHANGE, exchange

INITIATE_PATH = "/v1/auth/{provider}/initiate"
CALLBACK_PATH = "/v1/auth/{provider}/callback"
TOKEN_PATH = "/v1/auth/token"  # noqa: S105 (a path)
REVOKE_PATH = "/v1/auth/revoke"
_APP_STATE = re.compile(r"^[\x20-\x7e]{1,512}$")
_PROVIDER_TIMEOUT = aiohttp.ClientTimeout(total=10)


class SignInLinkInvalid(GatewayError):
    """The provider's callback names no sign-in this gateway started (a forged state): a page, never a redirect."""

    status = 400
    error = "invalid_request"


@dataclass
class AppFlow:
    providers: Mapping[str, ProviderClient]
    tokens: AppTokens
    public_url: str

    def provider(self, name: str) -> ProviderClient:
        client = self.providers.get(name)
        if client is None:
            raise NotFound("No such identity provider")
        return client

    def callback_url(self, name: str) -> str:
        return self.public_url.rstrip("/") + CALLBACK_PATH.replace("{provider}", name)


APP_FLOW = web.AppKey("app_flow", AppFlow)


async def api_key_id(request: web.Request) -> str:
    """The id of the valid API key in ``X-API-Key``, or ``invalid_client`` (401)."""
    if API_KEY_HEADER not in request.headers:
        raise InvalidClient("An API key is required in X-API-Key", headers={"WWW-Authenticate": 'ApiKey realm="app"'})
    try:
        principal = await request.app[AUTHENTICATOR].authenticate(request)
    except GatewayError as exc:
        if exc.status >= 500:
            raise
        raise InvalidClient("The API key is not valid", headers={"WWW-Authenticate": 'ApiKey realm="app"'}) from None
    if principal.method != "api_key":
        raise InvalidClient("An API key is required in X-API-Key")
    return principal.credential_id


def _single(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise InvalidRequest(f"{name} is repeated")
    return values[0] if values else None


async def app_callback(request: web.Request, key_id: str) -> tuple[str, str | None]:
    """The app's ``redirect_uri`` (one of the key's callback URLs) and its ``state``, each given at most once;
    ``invalid_request`` otherwise."""
    redirect_uri = _single(request, "redirect_uri")
    app_state = _single(request, "state")
    if not redirect_uri:
        raise InvalidRequest("redirect_uri is required")
    if app_state is not None and not _APP_STATE.fullmatch(app_state):
        raise InvalidRequest("state is 1 to 512 printable ASCII characters")
    if not allows(await request.app[STORAGE].get_key_app(key_id), redirect_uri):
        raise InvalidRequest("redirect_uri is not one of this API key's callback URLs")
    return redirect_uri, app_state


async def initiate(request: web.Request) -> web.StreamResponse:
    flow = request.app[APP_FLOW]
    name = request.match_info["provider"]
    client = flow.provider(name)
    key_id = await api_key_id(request)
    redirect_uri, app_state = await app_callback(request, key_id)
    if not request.app[CONFIG].identity.encryption_keys:
        raise ServiceUnavailable("Identity tokens are not configured on this gateway (identity.encryption_keys)")
    store = request.app[STORAGE]
    try:
        url, pending = await client.begin(flow.callback_url(name))
    except ProviderError as exc:
        raise ServiceUnavailable("The identity provider is unavailable, retry shortly") from exc
    sign_in = AppSignIn(
        state_hash=secret_hash(pending.state),
        provider=name,
        api_key_id=key_id,
        redirect_uri=redirect_uri,
        app_state=app_state,
        code_verifier=seal_verifier(pending.code_verifier, pending.state),
        nonce=pending.nonce,
        created_at=pending.created_at,
        expires_at=pending.created_at + PENDING_TTL,
    )
    await store.create_app_sign_in(sign_in)
    if "application/json" in request.headers.get("Accept", ""):
        return web.json_response({"authorization_url": url}, headers=NO_STORE)
    return web.Response(status=302, headers={"Location": url, **NO_STORE})


def redirect_to_app(redirect_uri: str, params: Mapping[str, str | None]) -> web.Response:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    separator = "&" if "?" in redirect_uri else "?"
    return web.Response(status=302, headers={"Location": redirect_uri + separator + query, **NO_STORE})


def app_error(exc: ProviderError) -> str:
    if exc.code in ("access_denied", "login_required"):
        return "access_denied"
    if exc.code == "invalid_state":
        return "invalid_request"
    if exc.code == "provider_unavailable":
        return "temporarily_unavailable"
    return "server_error"


async def callback(request: web.Request) -> web.StreamResponse:
    flow = request.app[APP_FLOW]
    name = request.match_info["provider"]
    client = flow.provider(name)
    store, clock = request.app[STORAGE], request.app[CLOCK]
    state = request.query.get("state", "")
    row = await store.get_app_sign_in(secret_hash(state)) if state else None
    if row is None or row.provider != name:
        raise SignInLinkInvalid("This sign-in link is not valid here. Go back to the app and sign in again.")
    key_app = await store.get_key_app(row.api_key_id)
    key = await store.get_api_key(row.api_key_id)
    still_allowed = key is not None and key.usable_at(clock.now()) and allows(key_app, row.redirect_uri)
    if not still_allowed or key_app is None:
        raise SignInLinkInvalid("The app this sign-in started from is no longer allowed to receive it.")

    def to_app(error: str, description: str) -> web.Response:
        return redirect_to_app(
            row.redirect_uri, {"error": error, "error_description": description, "state": row.app_state}
        )

    if not await store.claim_app_sign_in(row.state_hash, now=clock.now()):
        return to_app("invalid_request", "This sign-in was already completed; start again")
    try:
        pending = PendingAuthorization(
            provider=name,
            state=state,
            code_verifier=open_verifier(row.code_verifier, state),
            nonce=row.nonce,
            redirect_uri=flow.callback_url(name),
            created_at=row.created_at,
        )
        identity = await client.complete(pending, {k: request.query[k] for k in request.query})
    except ProviderError as exc:
        return to_app(app_error(exc), exc.description)
    config = request.app[CONFIG]
    try:
        user = await account_for(identity, store=store, clock=clock, settings=config.accounts, audit=request.app[AUDIT])
    except AccountRefused as exc:
        return to_app("access_denied", exc.description)
    try:
        code = await flow.tokens.new_code(user_id=user.id, api_key_id=row.api_key_id, redirect_uri=row.redirect_uri)
        if not key_app.tokens_in_url:
            return redirect_to_app(row.redirect_uri, {"code": code, "state": row.app_state})
        # Explicitly chosen for this key (TOKENS_IN_URL_RISK): the tokens themselves in the URL.
        pair = await flow.tokens.redeem(code, api_key_id=row.api_key_id, redirect_uri=row.redirect_uri)
    except (StorageUnavailable, SigningUnavailable):
        # The sign-in was taken already: the app hears it and starts again, rather than the person seeing a 500.
        return to_app("temporarily_unavailable", "The gateway cannot issue tokens right now; retry shortly")
    body = {k: str(v) for k, v in token_body(pair, now=clock.now()).items()}
    return redirect_to_app(row.redirect_uri, {**body, "state": row.app_state})


async def token(request: web.Request) -> web.Response:
    form = await read_form(request)
    key_id = await api_key_id(request)
    flow, now = request.app[APP_FLOW], request.app[CLOCK].now()
    grant_type = form.get("grant_type")
    try:
        if grant_type == "authorization_code":
            code = form.get("code")
            if code is None:
                raise InvalidRequest("code is required")
            pair = await flow.tokens.redeem(code, api_key_id=key_id, redirect_uri=form.get("redirect_uri"))
        elif grant_type == "refresh_token":
            refresh = form.get("refresh_token")
            if refresh is None:
                raise InvalidRequest("refresh_token is required")
            pair = await flow.tokens.refresh(refresh, api_key_id=key_id)
        elif grant_type == TOKEN_EXCHANGE:
            return await exchange(request, form, key_id)  # an upstream's service key (gateway.vault.exchange)
        elif grant_type is None:
            raise InvalidRequest("grant_type is required")
        else:
            raise UnsupportedGrantType("Supported grant types: authorization_code, refresh_token")
    except (StorageUnavailable, SigningUnavailable) as exc:
        raise ServiceUnavailable("Authorization service unavailable, retry shortly") from exc
    return web.json_response(token_body(pair, now=now), headers=NO_STORE)


async def revoke(request: web.Request) -> web.Response:
    form = await read_form(request)
    key_id = await api_key_id(request)
    token_value = form.get("token")
    if token_value is None:
        raise InvalidRequest("token is required")
    try:
        await request.app[APP_FLOW].tokens.revoke(token_value, api_key_id=key_id)
    except StorageUnavailable as exc:
        raise ServiceUnavailable("Authorization service unavailable, retry shortly") from exc
    return web.Response(status=200, headers=NO_STORE)


@contextlib.asynccontextmanager
async def _app_flow_ctx(app: web.Application) -> AsyncIterator[None]:
    config, storage, clock = app[CONFIG], app[STORAGE], app[CLOCK]
    identity = app[IDENTITY]
    verifier = app[IDENTITY_VERIFIER] = IdentityTokenVerifier(identity.tokens, storage, clock, app.get(WATERMARK))
    app[REVOCATIONS].listen(verifier.on_revocation)
    app[REVOCATIONS].listen_gaps(verifier.flush)
    async with aiohttp.ClientSession(timeout=_PROVIDER_TIMEOUT) as session:
        providers = {p.name: ProviderClient(p, session, clock) for p in config.identity_providers.providers}
        tokens = AppTokens(
            grants=storage, users=storage, tokens=identity.tokens, clock=clock, oauth=config.oauth, app=app
        )
        app[APP_FLOW] = AppFlow(providers, tokens, config.public_url)
        yield


def setup_app_flow(app: web.Application) -> None:
    """Register after ``setup_credentials`` and ``setup_identity``; the routes are lines of ``gateway.routes``."""
    app.cleanup_ctx.append(_app_flow_ctx)
