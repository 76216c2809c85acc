"""The dashboard people use in the browser: accounts (sign-up, sign-in, password), Authorized Apps, API keys
and usage. ``setup_dashboard`` wires its pages into the app (after ``setup_oauth``, whose sign-in sessions,
password hasher, throttle and client resolver it reuses, and after ``setup_quota``, whose gate shows the usage)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.accounts import Accounts
from gateway.apikeys import ApiKeyFormat
from gateway.appkeys import CLOCK, CONFIG, STORAGE
from gateway.dashboard.context import DASHBOARD, Dashboard
from gateway.dashboard.pages import setup_pages
from gateway.dashboard.signin import setup_signin
from gateway.errors import Handler, ServiceUnavailable
from gateway.oauth.flow import AUTHORIZATION_FLOW
from gateway.quota.setup import QUOTA_GATE
from gateway.storage.base import StorageUnavailable
from gateway.web_pages import is_dashboard_page

ADMIN_PREFIX = "/admin/"


@contextlib.asynccontextmanager
async def _dashboard_ctx(app: web.Application) -> AsyncIterator[None]:
    config, storage, flow = app[CONFIG], app[STORAGE], app[AUTHORIZATION_FLOW]
    app[DASHBOARD] = Dashboard(
        accounts=Accounts(
            users=storage,
            keys=storage,
            passwords=flow.passwords,
            key_format=ApiKeyFormat(config.api_keys.prefix),
            clock=app[CLOCK],
        ),
        logins=flow.logins,
        passwords=flow.passwords,
        throttle=flow.throttle,
        clients=flow.clients,
        settings=config.accounts,
        public_origin=flow.settings.public_origin,
        trusted_proxies=config.security.trusted_proxies,
        quota=app[QUOTA_GATE],
    )
    yield


@web.middleware
async def storage_down_is_503(request: web.Request, handler: Handler) -> web.StreamResponse:
    """On the dashboard and the admin API an unreachable database is a 503 asking to retry. Every action is safe
    to repeat, and whatever it committed before the failure was already announced."""
    try:
        return await handler(request)
    except StorageUnavailable as exc:
        if not (is_dashboard_page(request.path) or request.path.startswith(ADMIN_PREFIX)):
            raise
        raise ServiceUnavailable("The database is unreachable; the change may be incomplete. Retry shortly.") from exc


def setup_dashboard(app: web.Application) -> None:
    app.middlewares.append(storage_down_is_503)
    app.cleanup_ctx.append(_dashboard_ctx)
    setup_signin(app)
    setup_pages(app)
