"""The two pages a person sees during authorization: sign-in and consent.

Both are plain HTML forms (no JavaScript). Posts must come from the gateway's own origin and carry the
CSRF token of their pending authorization; the pending request, not the form, is the only source of what
is being approved. Sign-in failures get one generic message and are throttled per account and address.
"""

from __future__ import annotations

import math
import secrets

from aiohttp import web

from gateway.identity.signin_web import sign_in_choices
from gateway.net import client_address
from gateway.oauth.browser_sessions import browser_id
from gateway.oauth.cimd import CimdError
from gateway.oauth.clients import RegisteredClient
from gateway.oauth.context import CONSENT_PATH, LOGIN_PATH
from gateway.oauth.flow import AUTHORIZATION_FLOW, AuthorizationFlow, csrf_token
from gateway.oauth.redirect_uris import redirect_receiver
from gateway.oauth.sign_in import TooManySignIns, check_sign_in
from gateway.security_events import consent_decided
from gateway.storage.oauth import AuthorizationRequest, Consent
from gateway.web_pages import error_page, read_form, render, see_other

GENERIC_FAILURE = "Invalid email or password."
EXPIRED = "This sign-in link has expired or was already used. Start again from your application."
PASSWORDS_OFF = "This gateway signs people in only with an identity provider. Go back and choose one."


async def _pending_from(request: web.Request, request_id: str) -> AuthorizationRequest | None:
    flow = request.app[AUTHORIZATION_FLOW]
    return await flow.load_pending(request_id, browser_id(request))


def _csrf_ok(request: web.Request, request_id: str, submitted: str) -> bool:
    browser = browser_id(request)
    return browser is not None and secrets.compare_digest(csrf_token(request_id, browser), submitted)


async def _form(request: web.Request, flow: AuthorizationFlow) -> dict[str, str]:
    return await read_form(request, flow.settings.public_origin)


async def _client(flow: AuthorizationFlow, client_id: str) -> RegisteredClient | None:
    """The client of a pending request; None when it is gone or its metadata document no longer loads. A
    metadata document's cached copy serves even past its expiry: /authorize already checked it (and its budget)."""
    try:
        return await flow.clients.resolve(client_id, network=not flow.clients.has_copy(client_id))
    except CimdError:
        return None


async def _client_name(flow: AuthorizationFlow, client_id: str) -> str:
    client = await _client(flow, client_id)
    return (client.client_name if client is not None else None) or client_id


async def login_page(request: web.Request) -> web.StreamResponse:
    flow = request.app[AUTHORIZATION_FLOW]
    request_id = request.query.get("tx", "")
    pending = await _pending_from(request, request_id)
    browser = browser_id(request)
    if pending is None or browser is None:
        return error_page("Sign-in expired", EXPIRED)
    return render(
        "login.html",
        tx=request_id,
        csrf=csrf_token(request_id, browser),
        email="",
        error=None,
        client_name=await _client_name(flow, pending.client_id),
        **sign_in_choices(request.app, tx=request_id),
    )


async def login_submit(request: web.Request) -> web.StreamResponse:
    flow = request.app[AUTHORIZATION_FLOW]
    if not flow.settings.config.accounts.local_passwords:
        return error_page("Passwords are off", PASSWORDS_OFF, status=403)
    form = await _form(request, flow)
    request_id = form.get("tx", "")
    pending = await _pending_from(request, request_id)
    browser = browser_id(request)
    if pending is None or browser is None:
        return error_page("Sign-in expired", EXPIRED)
    if not _csrf_ok(request, request_id, form.get("csrf", "")):
        return error_page("Request refused", "The form was not submitted from this page.", status=403)
    email, password = form.get("email", "").strip(), form.get("password", "")

    async def again(message: str, status: int) -> web.Response:
        return render(
            "login.html",
            status=status,
            tx=request_id,
            csrf=csrf_token(request_id, browser),
            email=email,
            error=message,
            client_name=await _client_name(flow, pending.client_id),
            **sign_in_choices(request.app, tx=request_id),
        )

    address = client_address(request, flow.settings.config.security.trusted_proxies)
    try:
        user = await check_sign_in(
            request.app,
            throttle=flow.throttle,
            users=flow.users,
            passwords=flow.passwords,
            email=email,
            password=password,
            address=address,
            client_id=pending.client_id,
        )
    except TooManySignIns as exc:
        response = await again("Too many attempts. Wait a moment and try again.", 429)
        response.headers["Retry-After"] = str(math.ceil(exc.wait))
        return response
    if user is None:
        return await again(GENERIC_FAILURE, 401)
    response = see_other(f"{CONSENT_PATH}?tx={request_id}")
    await flow.logins.start(request, response, user)
    await flow.requests.set_authorization_user(pending.request_hash, user.id)
    return response


async def consent_page(request: web.Request) -> web.StreamResponse:
    flow = request.app[AUTHORIZATION_FLOW]
    request_id = request.query.get("tx", "")
    pending = await _pending_from(request, request_id)
    browser = browser_id(request)
    if pending is None or browser is None:
        return error_page("Authorization expired", EXPIRED)
    user = await flow.logins.current_user(request)
    if user is None or (pending.user_id is not None and pending.user_id != user.id):
        return see_other(f"{LOGIN_PATH}?tx={request_id}")
    client = await _client(flow, pending.client_id)
    if client is None:
        return error_page("Unknown application", "This application is no longer registered or its metadata is invalid.")
    # Step-up: an application already approved is asked about what is new only.
    previous = await flow.consents.get_consent(user.id, pending.client_id, pending.redirect_uri, pending.resource)
    approved = set(previous.scope.split()) if previous is not None else set()
    asked = pending.scope.split()
    new = [scope for scope in asked if scope not in approved] or asked
    return render(
        "consent.html",
        tx=request_id,
        csrf=csrf_token(request_id, browser),
        client_name=client.client_name or client.client_id,
        verified=client.verified,
        client_host=client.host,
        receiver=redirect_receiver(pending.redirect_uri),
        user_email=user.email,
        resource=pending.resource,
        scopes=[flow.settings.scopes.describe(scope) for scope in new],
        more=previous is not None and len(new) < len(asked),
    )


async def consent_submit(request: web.Request) -> web.StreamResponse:
    flow = request.app[AUTHORIZATION_FLOW]
    form = await _form(request, flow)
    request_id = form.get("tx", "")
    pending = await _pending_from(request, request_id)
    if pending is None:
        return error_page("Authorization expired", EXPIRED)
    if not _csrf_ok(request, request_id, form.get("csrf", "")):
        return error_page("Request refused", "The form was not submitted from this page.", status=403)
    user = await flow.logins.current_user(request)
    if user is None or pending.user_id != user.id:
        return error_page("Request refused", "Sign in again to approve this application.", status=403)
    decision = form.get("decision")
    if decision not in ("approve", "deny"):
        return error_page("Invalid request", "Choose Approve or Deny.")
    now = flow.settings.clock.now()
    # One decision per pending request: a replayed or double-clicked form finds it completed.
    if not await flow.requests.complete_authorization_request(pending.request_hash, now=now):
        return error_page("Authorization expired", EXPIRED)
    if decision == "deny":
        consent_decided(request.app, granted=False, user_id=user.id, client_id=pending.client_id, scope=pending.scope)
        return see_other(flow.respond(pending, error="access_denied", error_description="The user denied the request"))
    previous = await flow.consents.get_consent(user.id, pending.client_id, pending.redirect_uri, pending.resource)
    scope = " ".join(sorted(set(pending.scope.split()) | set(previous.scope.split() if previous else [])))
    await flow.consents.save_consent(
        Consent(
            user_id=user.id,
            client_id=pending.client_id,
            redirect_uri=pending.redirect_uri,
            resource=pending.resource,
            scope=scope,
            created_at=previous.created_at if previous else now,
            updated_at=now,
        )
    )
    consent_decided(request.app, granted=True, user_id=user.id, client_id=pending.client_id, scope=scope)
    code = await flow.issue_code(user.id, pending)
    return see_other(flow.respond(pending, code=code))
