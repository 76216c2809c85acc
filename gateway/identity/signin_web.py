"""The pages of signing in with an identity provider: ``GET /account/login/{provider}`` (the dashboard),
``GET /login/{provider}?tx=…`` (the OAuth consent flow), and the provider's one callback
``GET /auth/{provider}/callback``.

A start is charged to the address's ``authorize`` budget. The callback takes the pending sign-in (once, this
browser's only), asks ``gateway.identity.linking`` which account it is, starts a fresh browser session (the old
one ends) and continues where the person was: the consent page of the pending authorization, or ``/account``.
Every outcome is audited (``login.succeeded`` / ``login.failed``, reason ``provider:NAME[:code]``), which the
flight recorder files as a ``sign_in`` step of the client being authorized. Refusals are pages saying why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from gateway.appkeys import CLOCK, CONFIG, STORAGE
from gateway.audit import AUDIT
from gateway.dashboard.context import ACCOUNT_PATH, DASHBOARD, SIGNIN_PATH
from gateway.errors import NotFound
from gateway.identity.linking import AccountRefused, account_for
from gateway.identity.provider_config import ProviderConfig
from gateway.identity.provider_http import ProviderError
from gateway.identity.providers import ProviderClient
from gateway.identity.signin import PROVIDER_SIGN_INS
from gateway.metrics import METRICS
from gateway.oauth.browser_sessions import bind_browser, browser_id, new_browser_id
from gateway.oauth.context import CONSENT_PATH, LOGIN_PATH
from gateway.oauth.flow import AUTHORIZATION_FLOW
from gateway.security_events import login_succeeded
from gateway.throttle.limits import PROTECTIVE_LIMITS
from gateway.web_pages import error_page, found, render, see_other

DASHBOARD_RETURN = "account"
OAUTH_RETURN = "tx:"
EXPIRED = "This sign-in link has expired or was already used. Start again from your application."
PROVIDER_DOWN = "The identity provider could not be reached. Try again in a moment."
_SHOWN_CODES = {
    "access_denied": "You cancelled the sign-in at the provider.",
    "invalid_state": "This sign-in was not started in this browser, took too long, or was already used.",
}


def sign_in_choices(app: web.Application, *, tx: str | None = None) -> dict[str, Any]:
    """The template context of a sign-in page: the provider buttons (name, label, link) and ``local_passwords``."""
    sign_ins = app.get(PROVIDER_SIGN_INS)
    providers = sign_ins.providers if sign_ins is not None else []

    def link(name: str) -> str:
        return f"{LOGIN_PATH}/{name}?{urlencode({'tx': tx})}" if tx is not None else f"{SIGNIN_PATH}/{name}"

    return {
        "providers": [(p.name, p.display_name or p.name.capitalize(), link(p.name)) for p in providers],
        "local_passwords": app[CONFIG].accounts.local_passwords,
    }


def _client(request: web.Request) -> ProviderClient:
    sign_ins = request.app.get(PROVIDER_SIGN_INS)
    client = sign_ins.client(request.match_info["provider"]) if sign_ins is not None else None
    if client is None:
        raise NotFound("No such identity provider on this gateway.")
    return client


async def _redirect_to_provider(
    request: web.Request, client: ProviderClient, browser: str, return_to: str
) -> web.Response:
    await request.app[PROTECTIVE_LIMITS].authorize(request)
    try:
        url = await request.app[PROVIDER_SIGN_INS].start(client, browser=browser, return_to=return_to)
    except ProviderError:
        return error_page("Provider unavailable", PROVIDER_DOWN, status=503)
    return found(url)


async def dashboard_start(request: web.Request) -> web.StreamResponse:
    client = _client(request)
    browser = browser_id(request)
    fresh = browser is None
    browser = browser or new_browser_id()
    response = await _redirect_to_provider(request, client, browser, DASHBOARD_RETURN)
    if fresh:
        bind_browser(response, browser)
    return response


async def oauth_start(request: web.Request) -> web.StreamResponse:
    client = _client(request)
    tx, browser = request.query.get("tx", ""), browser_id(request)
    if browser is None or await request.app[AUTHORIZATION_FLOW].load_pending(tx, browser) is None:
        return error_page("Sign-in expired", EXPIRED)
    return await _redirect_to_provider(request, client, browser, OAUTH_RETURN + tx)


def _refused(request: web.Request, return_to: str | None, title: str, message: str, status: int) -> web.Response:
    """A page saying why, with a link back to the sign-in the person came from."""
    if return_to is not None and return_to.startswith(OAUTH_RETURN):
        back = f"{LOGIN_PATH}?tx={return_to.removeprefix(OAUTH_RETURN)}"
    else:
        back = SIGNIN_PATH
    return render("signin_refused.html", status=status, title=title, message=message, back=back)


async def callback(request: web.Request) -> web.StreamResponse:
    client = _client(request)
    app, name = request.app, client.config.name
    sign_ins = app[PROVIDER_SIGN_INS]
    flow = app[AUTHORIZATION_FLOW]
    browser = browser_id(request)
    return_to: str | None = None
    client_id: str | None = None
    try:
        stored = await sign_ins.take(client, browser=browser, state=request.query.get("state", ""))
        return_to = stored.return_to
        tx = return_to.removeprefix(OAUTH_RETURN) if return_to.startswith(OAUTH_RETURN) else None
        pending = await flow.load_pending(tx, browser) if tx is not None else None
        if tx is not None and pending is None:
            return error_page("Sign-in expired", EXPIRED)
        client_id = pending.client_id if pending is not None else None
        identity = await sign_ins.complete(client, stored, request.query)
        user = await account_for(
            identity, store=app[STORAGE], clock=app[CLOCK], settings=app[CONFIG].accounts, audit=app[AUDIT]
        )
    except ProviderError as exc:
        _failed(app, name, exc.code, client_id)
        if exc.code == "provider_unavailable":
            return _refused(request, return_to, "Provider unavailable", PROVIDER_DOWN, 503)
        message = _SHOWN_CODES.get(exc.code, f"The sign-in with {client.config.display_name or name} failed.")
        return _refused(request, return_to, "Sign-in failed", message, 400)
    except AccountRefused as exc:
        _failed(app, name, exc.reason, client_id)
        return _refused(request, return_to, "Sign-in refused", exc.description, 403)
    if pending is not None:
        response = see_other(f"{CONSENT_PATH}?tx={tx}")
        await flow.logins.start(request, response, user)
        await flow.requests.set_authorization_user(pending.request_hash, user.id)
    else:
        response = see_other(ACCOUNT_PATH)
        await app[DASHBOARD].logins.start(request, response, user)
    login_succeeded(app, user_id=user.id, client_id=client_id, reason=f"provider:{name}")
    return response


def _failed(app: web.Application, provider: str, code: str, client_id: str | None) -> None:
    app[METRICS].logins.labels(outcome="failed").inc()
    app[AUDIT].record("login.failed", actor="anonymous", client_id=client_id, reason=f"provider:{provider}:{code}")


@dataclass(frozen=True)
class LinkedIdentity:
    """A provider account linked to the signed-in account, as ``/account`` lists it."""

    provider: str
    email: str | None
    linked_at: float
    last_used_at: float


def _issuer_of(provider: ProviderConfig) -> str:
    """The issuer ``ProviderClient.metadata`` reports: the configured one, or the authorization endpoint's origin."""
    if provider.issuer is not None:
        return provider.issuer
    parts = urlsplit(provider.authorization_endpoint or "")
    return f"{parts.scheme}://{parts.netloc}"


async def linked_identities(app: web.Application, user_id: str) -> list[LinkedIdentity]:
    """The user's linked provider accounts, each named as its provider is configured (else by its issuer)."""
    sign_ins = app.get(PROVIDER_SIGN_INS)
    labels = {_issuer_of(p): p.display_name or p.name.capitalize() for p in (sign_ins.providers if sign_ins else [])}
    links = await app[STORAGE].list_identity_links(user_id)
    return [
        LinkedIdentity(labels.get(link.provider, link.provider), link.email, link.linked_at, link.last_used_at)
        for link in links
    ]
