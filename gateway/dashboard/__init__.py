"""The dashboard people use in the browser: accounts (sign-up, sign-in, password), Authorized Apps, API keys
and usage. ``setup_dashboard`` wires its pages into the app (after ``setup_oauth``, whose sign-in sessions,
password hasher, throttle and client resolver it reuses, and after ``setup_quota``, whose gate shows the usage);
its routes are in ``gateway.routes``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.accounts import Accounts
from gateway.apikeys import ApiKeyFormat
from gateway.appkeys import CLOCK, CONFIG, STORAGE
from gateway.dashboard.context import DASHBOARD, Dashboard
from gateway.oauth.flow import AUTHORIZATION_FLOW
from gateway.quota.setup import QUOTA_GATE


@contextlib.asynccontextmanager
async def _dashboard_ctx(app: web.Application) -> AsyncIterator[None]:
    config, storage, flow = app[CONFIG], app[STORAGE], app[AUTHORIZATION_FLOW]
    app[DASHBOARD] = Dashboard(
        accounts=Accounts(
            users=storage,
            keys=storage,
            passwords=flow.passwords,
            key_format=ApiKeyFormat(config.api_keys.prefix, config.api_keys.format),
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


def setup_dashboard(app: web.Application) -> None:
    """The dashboard's collaborators (its routes are in ``gateway.routes``)."""
    app.cleanup_ctx.append(_dashboard_ctx)
