"""The authorization endpoint (OAuth 2.1 §4.1.1), validated in two phases.

Phase one settles the client and the redirect URI. Until both are known good, every error is a page in
the browser and nothing is redirected (OAuth 2.1 §4.1.2.1: never redirect to an unverified URI). Phase
two checks the rest (response type, PKCE, resource, scope). A registered redirect URI is not a trusted one
(anyone can register a client), so a phase-two error goes back by redirect, with ``error``, ``state`` and
``iss``, only when the signed-in user already approved this client at this redirect URI; anyone else gets
a page naming the error and what would receive it, with a link that delivers the error if they choose to
(RFC 9700 §4.11.2, OAuth 2.1 §7.13.2: the gateway's origin is no open redirector).

A valid request becomes a pending authorization bound to this browser, and the user is sent to sign in,
then to the consent page — or straight back with a code when they are signed in and already approved
exactly this (same client, redirect URI, resource, scope ⊆). ``prompt=none`` that cannot get a code is
redirected with an error only for a client the user approved; anything else is a page, so the gateway
never bounces people to a URI nobody trusted.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from aiohttp import web
from multidict import MultiMapping

from gateway.errors import InvalidRequest
from gateway.flight.setup import note, record_request
from gateway.oauth.browser_sessions import bind_browser, browser_id, new_browser_id
from gateway.oauth.cimd import CimdError
from gateway.oauth.clients import RegisteredClient
from gateway.oauth.context import CONSENT_PATH, LOGIN_PATH
from gateway.oauth.flow import AUTHORIZATION_FLOW, AuthorizationFlow, with_params
from gateway.oauth.pkce import validate_challenge
from gateway.oauth.redirect_uris import redirect_receiver, redirect_uri_matches
from gateway.oauth.resource_uri import canonical_resource
from gateway.secrets_hashing import secret_hash
from gateway.security_events import consent_decided
from gateway.storage.base import User
from gateway.storage.oauth import AuthorizationRequest
from gateway.web_pages import error_page, found, render, see_other

MAX_STATE_LENGTH = 2048
SINGLE = ("client_id", "redirect_uri", "response_type", "state", "code_challenge", "code_challenge_method", "scope")


@dataclass(frozen=True)
class RedirectError(Exception):
    """A phase-two error: reported to the client at its (validated) redirect URI."""

    error: str
    description: str


async def _client(
    request: web.Request, flow: AuthorizationFlow, client_id: str, *, refresh: bool = False
) -> RegisteredClient | web.Response:
    network = True
    if flow.clients.would_fetch(client_id, refresh=refresh):
        # A spent fetch budget serves the cached copy when there is one (429 only without one).
        network = await flow.throttle.cimd_fetch(request, client_id, have_copy=flow.clients.has_copy(client_id))
    try:
        client = await flow.clients.resolve(client_id, refresh=refresh, network=network)
    except CimdError as exc:
        record_request(request, "authorize", "failed", "invalid_client", detail=f"{client_id[:200]!r}: {exc}")
        return error_page("Unknown application", "The application's metadata could not be fetched or is invalid.")
    if client is None:
        detail = f"client_id {client_id[:200]!r} is not registered"
        record_request(request, "authorize", "failed", "invalid_client", detail=detail)
        return error_page("Unknown application", "This application is not registered with the gateway.")
    return client


def _redirect_uri(client: RegisteredClient, requested: str | None) -> tuple[str, bool] | None:
    if requested is None:
        # OAuth 2.1 §2.3.2: may be omitted only when exactly one redirect URI is registered.
        return (client.redirect_uris[0], False) if len(client.redirect_uris) == 1 else None
    if any(redirect_uri_matches(registered, requested) for registered in client.redirect_uris):
        return requested, True
    return None


def _phase_two(flow: AuthorizationFlow, query: MultiMapping[str]) -> tuple[str, str, str]:
    """The PKCE challenge, scope and resource, or a ``RedirectError``."""
    for name in SINGLE:
        if len(query.getall(name, [])) > 1:
            raise RedirectError("invalid_request", f"{name} repeated")
    response_type = query.get("response_type")
    if not response_type:
        raise RedirectError("invalid_request", "response_type is required")
    if response_type != "code":
        raise RedirectError("unsupported_response_type", "Only the code flow is supported")
    challenge = query.get("code_challenge")
    method = query.get("code_challenge_method")
    try:
        # OAuth 2.1 §4.1.1 / RFC 7636 §4.3: PKCE required, S256 only; a missing method is not "plain".
        challenge = validate_challenge(challenge, method)
    except InvalidRequest as exc:
        raise RedirectError("invalid_request", exc.description) from exc
    resources = query.getall("resource", [])
    if len(resources) > 1:
        raise RedirectError("invalid_target", "Only one resource per request")
    resource = flow.settings.resource
    # RFC 8707 §2: the resource must be this MCP server (trailing slash and case of scheme/host forgiven).
    if resources and canonical_resource(resources[0]) != resource:
        raise RedirectError(
            "invalid_target",
            f"The client asked for resource {resources[0][:200]!r} but this server is {flow.settings.resource}",
        )
    scope = flow.settings.scopes.settle(query.get("scope"))
    if scope is None:
        raise RedirectError("invalid_scope", "Unknown scope requested")
    return challenge, scope, resource


async def _without_interaction(
    flow: AuthorizationFlow, user: User | None, pending: AuthorizationRequest, prompt: set[str]
) -> web.Response:
    """``prompt=none`` that cannot be answered with a code. The error goes back by redirect only to a client
    this user already approved at this redirect URI: otherwise anyone who registers a client could use the
    gateway to bounce people to their own site (RFC 9700 §4.11.2, security-cases 37)."""
    if user is None or not await flow.approved(user.id, pending.client_id, pending.redirect_uri):
        return error_page("Sign-in required", "Sign in and approve this application from the application itself.")
    error = "login_required" if "login" in prompt else "consent_required"
    return found(flow.respond(pending, error=error))


async def _refused(
    request: web.Request,
    flow: AuthorizationFlow,
    client: RegisteredClient,
    redirect_uri: str,
    exc: RedirectError,
    location: str,
) -> web.Response:
    """A phase-two error: redirected only to a client the signed-in user approved at this redirect URI;
    otherwise a page, whose link carries the same error, ``state`` and ``iss`` if the person follows it."""
    user = await flow.logins.current_user(request)
    if user is not None and await flow.approved(user.id, client.client_id, redirect_uri):
        return found(location)
    return render(
        "authorize_error.html",
        status=400,
        client_name=client.client_name or client.client_id,
        verified=client.verified,
        error=exc.error,
        description=exc.description,
        receiver=redirect_receiver(redirect_uri),
        location=location,
    )


async def handle_authorize(request: web.Request) -> web.StreamResponse:
    flow = request.app[AUTHORIZATION_FLOW]
    await flow.throttle.authorize(request)
    user = await flow.logins.current_user(request)
    if user is not None:
        note(request, account_id=user.id)  # the person's own attempts list this one, whatever becomes of it
    query = request.query
    client_id = query.get("client_id")
    if not client_id or len(query.getall("client_id")) > 1:
        return error_page("Invalid request", "The request does not name exactly one application (client_id).")
    client = await _client(request, flow, client_id)
    if isinstance(client, web.Response):
        return client
    if len(query.getall("redirect_uri", [])) > 1:
        return error_page("Invalid request", "The request names more than one redirect URI.")
    settled = _redirect_uri(client, query.get("redirect_uri"))
    if settled is None and client.kind == "cimd":
        # CIMD §4.4: a cached document may be stale; fetch it once more before refusing.
        refreshed = await _client(request, flow, client_id, refresh=True)
        if isinstance(refreshed, web.Response):
            return refreshed
        client, settled = refreshed, _redirect_uri(refreshed, query.get("redirect_uri"))
    if settled is None:
        record_request(
            request,
            "authorize",
            "failed",
            "invalid_redirect_uri",
            detail=f"redirect_uri {query.get('redirect_uri')!r} is not one of the registered "
            f"{', '.join(client.redirect_uris)}",
            client_id=client.client_id,
        )
        return error_page("Invalid redirect", "The redirect URI is not registered for this application.")
    redirect_uri, given = settled
    state = query.get("state")
    if state is not None and len(state) > MAX_STATE_LENGTH:
        return error_page("Invalid request", "The state parameter is too long.")
    iss = flow.settings.issuer
    try:
        challenge, scope, resource = _phase_two(flow, query)
    except RedirectError as exc:
        record_request(request, "authorize", "failed", exc.error, detail=exc.description, client_id=client.client_id)
        location = with_params(redirect_uri, {"error": exc.error, "error_description": exc.description})
        location = with_params(location, {"state": state, "iss": iss})
        return await _refused(request, flow, client, redirect_uri, exc, location)

    browser = browser_id(request)
    new_browser = browser is None
    if browser is None:
        browser = new_browser_id()
    now = flow.settings.clock.now()
    request_id = secrets.token_urlsafe(32)
    pending = AuthorizationRequest(
        request_hash=secret_hash(request_id),
        browser_hash=secret_hash(browser),
        csrf_hash="",
        client_id=client.client_id,
        redirect_uri=redirect_uri,
        redirect_uri_given=given,
        state=state,
        code_challenge=challenge,
        scope=scope,
        resource=resource,
        created_at=now,
        expires_at=now + flow.settings.config.oauth.authorization_request_ttl,
    )
    prompt = set(query.get("prompt", "").split())
    if (
        user is not None
        and "consent" not in prompt
        and "login" not in prompt
        and await flow.remembered(user.id, pending)
    ):
        consent_decided(
            request.app,
            granted=True,
            user_id=user.id,
            client_id=pending.client_id,
            scope=pending.scope,
            reason="remembered",
        )
        code = await flow.issue_code(user.id, pending)
        return found(flow.respond(pending, code=code))
    if "none" in prompt:
        return await _without_interaction(flow, user, pending, prompt)
    record_request(request, "authorize", "ok", "ok", client_id=client.client_id, account_id=user.id if user else None)
    await flow.create_pending(pending)
    if user is not None and "login" not in prompt:
        await flow.requests.set_authorization_user(pending.request_hash, user.id)
    step = CONSENT_PATH if user is not None and "login" not in prompt else LOGIN_PATH
    response = see_other(f"{step}?tx={request_id}")
    if new_browser:
        bind_browser(response, browser)
    return response
