"""Sign-in, sign-up and sign-out for the dashboard (plain HTML forms; no JavaScript)."""

from __future__ import annotations

import math

from aiohttp import web

from gateway.accounts import AccountError
from gateway.audit import AUDIT
from gateway.dashboard.context import ACCOUNT_PATH, DASHBOARD, SIGNIN_PATH, Dashboard
from gateway.errors import Forbidden, NotFound, ServiceUnavailable
from gateway.identity.signin_web import sign_in_choices
from gateway.net import client_address
from gateway.oauth.browser_sessions import bind_browser, browser_id, new_browser_id
from gateway.oauth.sign_in import TooManySignIns, check_sign_in
from gateway.passwords import WeakPassword
from gateway.storage.base import Conflict, StorageUnavailable
from gateway.throttle.limits import PROTECTIVE_LIMITS
from gateway.web_pages import render, see_other

GENERIC_FAILURE = "Invalid email or password."
SIGNUP_PATH = "/signup"
LOGOUT_PATH = "/logout"
PASSWORDS_OFF = "This gateway signs people in only with an identity provider: choose one on the sign-in page."


def _page(request: web.Request, template: str, *, status: int = 200, **context: object) -> web.Response:
    """A page with a form protected by the browser-binding cookie's CSRF token (the cookie is set if absent)."""
    dashboard = request.app[DASHBOARD]
    browser = browser_id(request)
    fresh = browser is None
    browser = browser or new_browser_id()
    response = render(
        template,
        status=status,
        csrf=dashboard.browser_csrf(browser),
        signup_enabled=dashboard.settings.signup_enabled,
        **sign_in_choices(request.app),
        **context,
    )
    if fresh:
        bind_browser(response, browser)
    return response


async def signin_page(request: web.Request) -> web.StreamResponse:
    if await request.app[DASHBOARD].logins.current_user(request) is not None:
        return see_other(ACCOUNT_PATH)
    return _page(request, "account_login.html", email="", error=None)


async def signin_submit(request: web.Request) -> web.StreamResponse:
    dashboard = request.app[DASHBOARD]
    _require_passwords(dashboard)
    form = await dashboard.form(request)
    dashboard.check_browser_csrf(request, form)
    email, password = form.get("email", "").strip(), form.get("password", "")
    address = client_address(request, dashboard.trusted_proxies)
    try:
        user = await check_sign_in(
            request.app,
            throttle=dashboard.throttle,
            users=dashboard.accounts.users,
            passwords=dashboard.passwords,
            email=email,
            password=password,
            address=address,
            client_id=None,
            reason="dashboard",
        )
    except TooManySignIns as exc:
        response = _page(
            request, "account_login.html", status=429, email=email, error="Too many attempts. Wait and try again."
        )
        response.headers["Retry-After"] = str(math.ceil(exc.wait))
        return response
    if user is None:
        return _page(request, "account_login.html", status=401, email=email, error=GENERIC_FAILURE)
    response = see_other(ACCOUNT_PATH)
    await dashboard.logins.start(request, response, user)
    return response


def _require_passwords(dashboard: Dashboard) -> None:
    if not dashboard.settings.local_passwords:
        raise Forbidden(PASSWORDS_OFF)


def _require_signup(dashboard: Dashboard) -> None:
    if not dashboard.settings.signup_enabled:
        raise NotFound("Sign-up is closed on this gateway. Ask its operator for an account.")
    _require_passwords(dashboard)


async def signup_page(request: web.Request) -> web.StreamResponse:
    _require_signup(request.app[DASHBOARD])
    return _page(request, "signup.html", email="", error=None)


async def signup_submit(request: web.Request) -> web.StreamResponse:
    dashboard = request.app[DASHBOARD]
    _require_signup(dashboard)
    form = await dashboard.form(request)
    dashboard.check_browser_csrf(request, form)
    email, password = form.get("email", "").strip(), form.get("password", "")
    address = client_address(request, dashboard.trusted_proxies)
    # Every attempt counts, so one address cannot mint accounts (or probe emails) in bulk.
    wait = await request.app[PROTECTIVE_LIMITS].signup(address)
    if wait > 0:
        response = _page(request, "signup.html", status=429, email=email, error="Too many attempts. Try later.")
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    if password != form.get("password_again", ""):
        return _page(request, "signup.html", status=400, email=email, error="The two passwords differ.")
    try:
        user = await dashboard.accounts.create_user(email, password)
    except WeakPassword as exc:
        return _page(request, "signup.html", status=400, email=email, error=f"Choose a longer password: {exc}.")
    except (AccountError, Conflict):
        message = "This email address cannot be used. Sign in if you already have an account."
        return _page(request, "signup.html", status=400, email=email, error=message)
    except StorageUnavailable as exc:
        raise ServiceUnavailable("Sign-up unavailable, retry shortly") from exc
    response = see_other(ACCOUNT_PATH)
    await dashboard.logins.start(request, response, user)
    request.app[AUDIT].record("signup", actor=user.id, user_id=user.id)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    dashboard = request.app[DASHBOARD]
    user, _ = await dashboard.signed_in_form(request)
    response = see_other(SIGNIN_PATH)
    await dashboard.logins.end(request, response)
    request.app[AUDIT].record("logout", actor=user.id, user_id=user.id)
    return response
