"""Administration over HTTP: the admin API, guarded by the ``admin`` role (``mcp-gateway users set-role``)."""

from __future__ import annotations

from aiohttp import web

from gateway.admin.api import setup_admin_api


def setup_admin(app: web.Application) -> None:
    setup_admin_api(app)
