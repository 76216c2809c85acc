"""What the dashboard's handlers share: the signed-in user, CSRF tokens and the account operations.

Dashboard sign-ins are the gateway's browser login sessions (``gateway.oauth.browser_sessions``): one
``__Host-gw_session`` cookie, server-side, with idle and absolute timeouts and a new id at every sign-in.
A session's CSRF token is derived from the session cookie (which scripts cannot read), so it is never stored
and changes with every sign-in. Forms before sign-in use the browser-binding cookie the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from aiohttp import web

from gateway.account_actions import AccountActions
from gateway.accounts import Accounts
from gateway.appkeys import CLOCK, STORAGE
from gateway.audit import AUDIT
from gateway.config import AccountsConfig
from gateway.errors import Forbidden, Unauthorized
from gateway.metrics import METRICS
from gateway.oauth.browser_sessions import LoginSessions, browser_id, session_cookie
from gateway.oauth.cimd import CimdError
from gateway.oauth.clients import ClientResolver
from gateway.oauth.limits import EndpointLimits
from gateway.passwords import Passwords
from gateway.quota.gate import QuotaGate
from gateway.revocation import REVOCATIONS
from gateway.storage.base import User
from gateway.web_pages import read_form

ACCOUNT_PATH = "/account"
SIGNIN_PATH = "/account/login"


def _derive(purpose: str, secret: str) -> str:
    return hmac.new(secret.encode(), purpose.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Dashboard:
    accounts: Accounts
    logins: LoginSessions
    passwords: Passwords
    throttle: EndpointLimits
    clients: ClientResolver
    settings: AccountsConfig
    public_origin: str
    trusted_proxies: tuple[str, ...]
    quota: QuotaGate
    """The account's plan and current usage (the same gate the MCP endpoints charge)."""

    async def client_name(self, client_id: str) -> str | None:
        """The client's self-asserted name (shown escaped), or None when unknown or its document fails."""
        with contextlib.suppress(CimdError):
            client = await self.clients.resolve(client_id)
            return client.client_name if client is not None else None
        return None

    def session_csrf(self, request: web.Request) -> str:
        """The CSRF token of this browser's sign-in session ('' without one)."""
        value = session_cookie(request)
        return _derive("dashboard-csrf", value) if value else ""

    def browser_csrf(self, browser: str) -> str:
        return _derive("account-form-csrf", browser)

    async def form(self, request: web.Request) -> dict[str, str]:
        """A same-origin form post's fields (``gateway.web_pages.read_form``)."""
        return await read_form(request, self.public_origin)

    async def signed_in_form(self, request: web.Request) -> tuple[User, dict[str, str]]:
        """A state-changing post from the signed-in user: same origin, a live session, the session's CSRF token."""
        form = await self.form(request)
        user = await self.logins.current_user(request)
        if user is None:
            raise Unauthorized("Your session has ended. Sign in again.")
        if not secrets.compare_digest(self.session_csrf(request), form.get("csrf", "")):
            raise Forbidden("The form was not submitted from this page. Reload it and try again.")
        return user, form

    def check_browser_csrf(self, request: web.Request, form: dict[str, str]) -> None:
        browser = browser_id(request)
        if browser is None or not secrets.compare_digest(self.browser_csrf(browser), form.get("csrf", "")):
            raise Forbidden("The form was not submitted from this page. Reload it and try again.")


DASHBOARD = web.AppKey("dashboard", Dashboard)


def actions_for(request: web.Request, actor: str, source: str) -> AccountActions:
    app = request.app
    return AccountActions(
        storage=app[STORAGE],
        bus=app[REVOCATIONS],
        audit=app[AUDIT],
        metrics=app[METRICS],
        clock=app[CLOCK],
        source=source,
        actor=actor,
    )
