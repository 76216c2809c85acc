"""The account page and its actions: Authorized Apps, API keys, usage, password.

Every state-changing action is a same-origin POST carrying the session's CSRF token; ids in URLs are opaque
and looked up only among the signed-in user's own apps and keys (anything else is 404).
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
from datetime import UTC, datetime

from aiohttp import web

from gateway import security_events
from gateway.accounts import AccountError
from gateway.appkeys import CLOCK, CONFIG, STORAGE
from gateway.audit import AUDIT
from gateway.authorized_apps import authorized_apps, find_app
from gateway.dashboard.chart import usage_chart
from gateway.dashboard.context import ACCOUNT_PATH, DASHBOARD, SIGNIN_PATH, actions_for
from gateway.errors import Forbidden, InvalidRequest, NotFound, ServiceUnavailable
from gateway.flight.reading import attempts_for
from gateway.flight.setup import FLIGHT
from gateway.flight.steps import Record
from gateway.identity.app_callbacks import TOKENS_IN_URL_RISK, CallbackUrlError, key_app_for
from gateway.identity.signin_web import linked_identities
from gateway.net import address_bucket, client_address
from gateway.oauth.sign_in import throttled_account
from gateway.passwords import WeakPassword
from gateway.policy.keys import UnknownKeyScope, key_scope
from gateway.quota.limiter import Usage
from gateway.storage.base import Conflict, StorageError, StorageUnavailable, User
from gateway.throttle.limits import Throttled
from gateway.usage_history import last_days
from gateway.web_pages import STATIC, render, see_other

log = logging.getLogger("gateway.dashboard")

MAX_KEY_DAYS = 3650
SCRIPT_CSP = "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; base-uri 'none'; " + (
    "frame-ancestors 'none'; form-action 'self'"
)


def when(ts: float | None) -> str:
    return "never" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


async def _usage(request: web.Request, user: User) -> Usage:
    """Current window counts (with Redis down, the degrading limiter answers from this replica's share)."""
    gate = request.app[DASHBOARD].quota
    return await gate.limiter.usage(user.id, gate.config.plan_for(user.plan))


async def _attempts(request: web.Request, user_id: str, now: float) -> list[Record]:
    """This person's recent connection steps (the flight recorder), newest first; none if it is off."""
    recorder = request.app.get(FLIGHT)
    if recorder is None:
        return []
    address = address_bucket(client_address(request, request.app[CONFIG].security.trusted_proxies))
    try:
        return await attempts_for(recorder, account_id=user_id, address=address, now=now)
    except Exception:  # a diagnostic panel never takes the dashboard down with it
        log.warning("could not read the flight recorder for the dashboard", exc_info=True)
        return []


async def account_page(request: web.Request) -> web.StreamResponse:
    dashboard = request.app[DASHBOARD]
    user = await dashboard.logins.current_user(request)
    if user is None:
        return see_other(SIGNIN_PATH)
    storage, now = request.app[STORAGE], request.app[CLOCK].now()
    days = dashboard.settings.usage_chart_days
    try:
        apps = await authorized_apps(user.id, consents=storage, grants=storage, name_of=dashboard.client_name)
        keys = [key for key in await storage.list_api_keys(user.id) if key.revoked_at is None]
        history = await storage.usage_history(user.id, since_day=last_days(now, days)[0])
        identities = await linked_identities(request.app, user.id)
    except StorageUnavailable as exc:
        raise ServiceUnavailable("The dashboard is unavailable, retry shortly") from exc
    attempts = await _attempts(request, user.id, now)
    last_problem = {}
    for record in attempts:
        if record.outcome == "failed" and record.client_id and record.client_id not in last_problem:
            last_problem[record.client_id] = record
    response = render(
        "dashboard.html",
        attempts=attempts,
        last_problem=last_problem,
        user=user,
        csrf=dashboard.session_csrf(request),
        key_request_id=secrets.token_urlsafe(18),
        tokens_in_url_risk=TOKENS_IN_URL_RISK,
        apps=apps,
        keys=keys,
        key_scopes=[(s.name, s.description) for s in request.app[CONFIG].authorization.scopes.values()],
        now=now,
        when=when,
        plan=dashboard.quota.config.plan_for(user.plan),
        usage=await _usage(request, user),
        chart=usage_chart(history, now=now, days=days),
        notice=request.query.get("done", ""),
        identities=identities,
        local_passwords=dashboard.settings.local_passwords,
    )
    return response


async def revoke_app(request: web.Request) -> web.StreamResponse:
    dashboard = request.app[DASHBOARD]
    user, _ = await dashboard.signed_in_form(request)
    storage = request.app[STORAGE]
    app = await find_app(user.id, request.match_info["app_id"], consents=storage, grants=storage)
    if app is None:
        raise NotFound("No such application in your account.")
    await actions_for(request, user.id, "dashboard").revoke_app(user, app)
    return see_other(f"{ACCOUNT_PATH}?done=app-revoked")


async def revoke_all(request: web.Request) -> web.StreamResponse:
    dashboard = request.app[DASHBOARD]
    user, _ = await dashboard.signed_in_form(request)
    await actions_for(request, user.id, "dashboard").revoke_all_apps(user)
    return see_other(f"{ACCOUNT_PATH}?done=all-revoked")


async def create_key(request: web.Request) -> web.StreamResponse:
    dashboard = request.app[DASHBOARD]
    user, form = await dashboard.signed_in_form(request)
    days_field = form.get("expires_in_days", "").strip()
    expires_in: float | None = None
    if days_field:
        if not (days_field.isascii() and days_field.isdecimal()) or not 1 <= int(days_field) <= MAX_KEY_DAYS:
            raise InvalidRequest(f"Expiry is a whole number of days from 1 to {MAX_KEY_DAYS}, or empty for none.")
        expires_in = int(days_field) * 86400.0
    request_id = form.get("request_id", "")
    if not 16 <= len(request_id) <= 64 or not request_id.isascii():
        raise InvalidRequest("Reload the account page and try again.")
    # The same form submitted twice (a reload, a double click) names the same key: the second mints nothing.
    key_id = "key_" + hashlib.sha256(f"{user.id}\n{request_id}".encode()).hexdigest()[:24]
    try:
        key_app = key_app_for(
            key_id, form.get("redirect_uris", "").splitlines(), tokens_in_url=form.get("tokens_in_url") == "on"
        )
    except CallbackUrlError as exc:
        raise InvalidRequest(f"{str(exc)[:1].upper()}{str(exc)[1:]}.") from exc
    try:
        scope = key_scope(request.app[CONFIG].authorization, [form.get("scopes", "")])
        row, minted = await dashboard.accounts.create_key(
            user, name=form.get("name", ""), expires_in=expires_in, key_id=key_id, scope=scope
        )
    except (AccountError, UnknownKeyScope) as exc:
        raise InvalidRequest(str(exc).capitalize() + ".") from exc
    except Conflict:
        return render("key_created.html", key=None, secret=None, when=when, status=409)
    if key_app is not None:
        await request.app[STORAGE].set_key_app(key_app)
    request.app[AUDIT].record("api_key.created", actor=user.id, reason="dashboard", user_id=user.id, key_id=row.id)
    response = render("key_created.html", key=row, secret=minted.key, when=when)
    response.headers["Content-Security-Policy"] = SCRIPT_CSP
    return response


async def revoke_key(request: web.Request) -> web.StreamResponse:
    dashboard = request.app[DASHBOARD]
    user, _ = await dashboard.signed_in_form(request)
    if not await actions_for(request, user.id, "dashboard").revoke_key(user.id, request.match_info["key_id"]):
        raise NotFound("No such active key in your account.")
    return see_other(f"{ACCOUNT_PATH}?done=key-revoked")


async def change_password(request: web.Request) -> web.StreamResponse:
    dashboard = request.app[DASHBOARD]
    user, form = await dashboard.signed_in_form(request)
    if not dashboard.settings.local_passwords:
        raise Forbidden("Passwords are off on this gateway: people sign in with an identity provider.")
    # The current password is a guess like any sign-in: same budgets, same records.
    account, address = throttled_account(user.email), client_address(request, dashboard.trusted_proxies)
    wait = await dashboard.throttle.login_attempt(account, address)
    if wait > 0:
        raise Throttled("Too many attempts; try again later", retry_after=math.ceil(wait))
    if not await dashboard.passwords.verify(user.password_hash, form.get("current_password", "")):
        security_events.login_failed(
            request.app, user_id=user.id, email=user.email, client_id=None, throttled=False, reason="wrong_password"
        )
        raise InvalidRequest("The current password is not right.")
    await dashboard.throttle.login_succeeded(account, address)
    new = form.get("new_password", "")
    if new != form.get("new_password_again", ""):
        raise InvalidRequest("The two new passwords differ.")
    try:
        await dashboard.accounts.set_password(user, new)
    except WeakPassword as exc:
        raise InvalidRequest(f"Choose a longer password: {exc}.") from exc
    except StorageError as exc:
        raise ServiceUnavailable("Could not change the password, retry shortly") from exc
    await actions_for(request, user.id, "dashboard").password_changed(
        user, revoke_tokens=form.get("revoke_tokens") == "yes"
    )
    # Every session ended, this one included; this browser gets a fresh one.
    response = see_other(f"{ACCOUNT_PATH}?done=password-changed")
    await dashboard.logins.start(request, response, user)
    return response


async def copy_script(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "copy.js", headers={"Cache-Control": "public, max-age=3600"})
