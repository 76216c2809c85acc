"""``GET /metrics``: the Prometheus text exposition of this replica's registry.

With ``metrics.bearer_token`` set the scraper must send ``Authorization: Bearer <token>`` (compared in constant
time); without it the endpoint is open, so keep it on an internal network or block it at the load balancer.
"""

from __future__ import annotations

import hmac

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.appkeys import CONFIG
from gateway.errors import Unauthorized
from gateway.metrics import METRICS

METRICS_PATH = "/metrics"


async def metrics(request: web.Request) -> web.Response:
    token = request.app[CONFIG].metrics.bearer_token
    if token:
        sent = request.headers.get("Authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            raise Unauthorized("The metrics bearer token is missing or wrong", headers={"WWW-Authenticate": "Bearer"})
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})


def setup_metrics_endpoint(app: web.Application) -> None:
    if app[CONFIG].metrics.enabled:
        app.router.add_get(METRICS_PATH, metrics)
