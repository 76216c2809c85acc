"""``GET /metrics``: the Prometheus text exposition of this replica's registry (all its workers' with ``--workers``).

With ``metrics.bearer_token`` set the scraper must send ``Authorization: Bearer <token>`` (compared in constant
time); without it the endpoint is open, so keep it on an internal network or block it at the load balancer.
"""

from __future__ import annotations

import hmac

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.appkeys import CONFIG
from gateway.errors import Unauthorized
from gateway.metrics import (
    AUTH_FAILURE_REASONS,
    METRICS,
    REVOCATION_SOURCES,
    UPSTREAM_ERROR_KINDS,
    Metrics,
    exposition,
)
from gateway.request_metrics import STREAM_TRANSPORTS
from gateway.security_events import GRANT_TYPES, LOGIN_OUTCOMES, REGISTRATION_KINDS
from gateway.throttle.limits import ENDPOINTS as THROTTLED_ENDPOINTS

METRICS_PATH = "/metrics"


async def metrics(request: web.Request) -> web.Response:
    token = request.app[CONFIG].metrics.bearer_token
    if token:
        scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
        presented = sent.strip().encode("utf-8", "surrogateescape")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented, token.encode()):
            raise Unauthorized("The metrics bearer token is missing or wrong", headers={"WWW-Authenticate": "Bearer"})
    body = exposition(request.app[METRICS])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})


def prime_label_sets(metrics: Metrics) -> None:
    """Export every series of a closed label set at 0 from the start, so a dashboard shows 0 and ``rate()``
    sees the first increment, instead of no data until something happens."""
    for reason in AUTH_FAILURE_REASONS:
        metrics.auth_failures.labels(reason=reason)
    for source in REVOCATION_SOURCES:
        metrics.revocations.labels(source=source)
    for kind in UPSTREAM_ERROR_KINDS:
        metrics.upstream_errors.labels(kind=kind)
    for grant_type in GRANT_TYPES:
        metrics.tokens_issued.labels(grant_type=grant_type)
    for outcome in LOGIN_OUTCOMES:
        metrics.logins.labels(outcome=outcome)
    for registration in REGISTRATION_KINDS:
        metrics.registrations.labels(kind=registration)
    for transport in STREAM_TRANSPORTS.values():
        metrics.open_streams.labels(transport=transport)
    for endpoint in THROTTLED_ENDPOINTS:
        metrics.throttled.labels(endpoint=endpoint)


def setup_metrics_endpoint(app: web.Application) -> None:
    prime_label_sets(app[METRICS])
