"""The OAuth 2.1 authorization server for MCP clients: discovery, registration, authorization with sign-in
and consent, tokens, revocation. ``setup_oauth`` wires every endpoint into the app."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.appkeys import CLOCK, CONFIG, STORAGE
from gateway.oauth.browser_sessions import LOGIN_SESSIONS, LoginSessions
from gateway.oauth.clients import CLIENT_RESOLVER, setup_clients
from gateway.oauth.context import OAUTH_SETTINGS
from gateway.oauth.flow import AUTHORIZATION_FLOW, AuthorizationFlow
from gateway.oauth.limits import ENDPOINT_LIMITS
from gateway.oauth.registration import setup_registration
from gateway.oauth.revocation import setup_revocation
from gateway.oauth.token_endpoint import setup_token_endpoint
from gateway.passwords import Passwords

PASSWORDS = web.AppKey("passwords", Passwords)


@contextlib.asynccontextmanager
async def _flow_ctx(app: web.Application) -> AsyncIterator[None]:
    config, storage, clock = app[CONFIG], app[STORAGE], app[CLOCK]
    logins = LoginSessions(
        store=storage,
        users=storage,
        clock=clock,
        idle_ttl=config.oauth.login_session_idle_ttl,
        absolute_ttl=config.oauth.login_session_absolute_ttl,
    )
    app[LOGIN_SESSIONS] = logins
    app[AUTHORIZATION_FLOW] = AuthorizationFlow(
        settings=app[OAUTH_SETTINGS],
        clients=app[CLIENT_RESOLVER],
        client_store=storage,
        requests=storage,
        grants=storage,
        consents=storage,
        users=storage,
        logins=logins,
        passwords=app[PASSWORDS] if PASSWORDS in app else Passwords(),
        throttle=app[ENDPOINT_LIMITS],
    )
    yield


def setup_oauth(app: web.Application) -> None:
    setup_registration(app)
    setup_clients(app)
    app.cleanup_ctx.append(_flow_ctx)
    setup_token_endpoint(app)
    setup_revocation(app)
