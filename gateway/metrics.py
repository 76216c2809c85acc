"""Prometheus metrics: the one vocabulary every feature reports into.

Each application owns its own ``CollectorRegistry`` (several gateways can share a test process). Every label is
drawn from a small closed set named here: never a raw client id, URL, e-mail or token.

Under ``serve --workers N`` every worker process writes its samples to files in one per-run directory
(prometheus-client's multiprocess mode, switched on by ``enable_multiprocess`` in each worker before any metric
exists) and ``exposition`` reads them all: counters and histograms are summed over the workers (those that died
too: a counter never goes back), gauges say how they combine (``multiprocess_mode``, ignored in one process).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

# Closed label vocabularies (a value outside these is reported as "other").
ROUTES: Final = frozenset(
    {
        "mcp",
        "mcp_sse",
        "mcp_sse_messages",
        "token",
        "revoke",
        "register",
        "authorize",
        "login",
        "consent",
        "app_auth",
        "metadata",
        "dashboard",
        "admin",
        "health",
        "metrics",
        "static",
        "vault_proxy",
        "other",
    }
)
AUTH_FAILURE_REASONS: Final = frozenset(
    {"missing", "malformed", "unknown", "expired", "revoked", "wrong_audience", "insufficient_scope", "disabled"}
)
REVOCATION_SOURCES: Final = frozenset({"rfc7009", "dashboard", "admin", "cli", "reuse", "api_key", "user_disabled"})
UPSTREAM_ERROR_KINDS: Final = frozenset({"refused", "timeout", "bad_status", "auth_rejected", "stream_broken"})

LATENCY_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PROPAGATION_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0)


def bounded(value: str, allowed: frozenset[str]) -> str:
    """``value`` when it belongs to the closed set, else ``"other"`` (labels never grow without bound)."""
    return value if value in allowed else "other"


def enable_multiprocess(directory: str) -> None:
    """Make every metric created from now on in this process write its samples under ``directory``.

    prometheus-client picks its value class once, at import, from ``PROMETHEUS_MULTIPROC_DIR``; a forked worker
    imported it long before, so the choice is made again here. Call it once per worker process, first thing."""
    os.environ[MULTIPROC_ENV] = directory
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def exposition(metrics: Metrics) -> bytes:
    """The text exposition: this registry's, or with workers, every worker's samples combined."""
    if metrics.multiprocess_dir is None:
        return generate_latest(metrics.registry)
    combined = CollectorRegistry()
    MultiProcessCollector(combined, path=metrics.multiprocess_dir)  # type: ignore[no-untyped-call]
    return generate_latest(combined)


class Metrics:
    """All series of one gateway. Names and labels are the contract the Grafana dashboard relies on."""

    def __init__(self, registry: CollectorRegistry | None = None, *, multiprocess_dir: str | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.multiprocess_dir = multiprocess_dir
        """The workers' shared sample directory (``enable_multiprocess``), or None in one process."""
        r = self.registry
        self.requests = Counter(
            "gateway_http_requests",
            "HTTP requests answered, by route and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "gateway_request_duration_seconds",
            "Time to the response headers, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead_seconds = Histogram(
            "gateway_overhead_seconds",
            "Time the gateway spends on a proxied request excluding the upstream (auth, quota, relay set-up).",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "gateway_upstream_duration_seconds",
            "Time from sending a request upstream to its response headers.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.open_streams = Gauge(
            "gateway_open_streams",
            "Event streams open to clients, by transport.",
            ["transport"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.auth_failures = Counter(
            "gateway_auth_failures", "Refused MCP credentials, by reason.", ["reason"], registry=r
        )
        self.tokens_issued = Counter(
            "gateway_tokens_issued", "Token responses sent, by grant type.", ["grant_type"], registry=r
        )
        self.refresh_reuse = Counter(
            "gateway_refresh_reuse_detected",
            "Retired refresh tokens presented again (the family is revoked).",
            registry=r,
        )
        self.revocations = Counter("gateway_revocations", "Revocations committed, by source.", ["source"], registry=r)
        self.revocation_propagation = Histogram(
            "gateway_revocation_propagation_seconds",
            "From a revocation's commit (on any replica) to this replica dropping the credential.",
            buckets=PROPAGATION_BUCKETS,
            registry=r,
        )
        self.quota_admitted = Counter("gateway_quota_admitted", "Requests admitted by the quota.", registry=r)
        self.quota_rejected = Counter("gateway_quota_rejected", "Requests refused with 429 by the quota.", registry=r)
        self.quota_degraded = Gauge(
            "gateway_quota_degraded",
            "1 while the shared quota counter is unreachable and a local share applies.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.quota_degraded_admissions = Counter(
            "gateway_quota_degraded_admissions", "Requests admitted by the per-replica degraded limiter.", registry=r
        )
        self.throttled = Counter(
            "gateway_throttled", "Requests refused by a protective limit, by endpoint.", ["endpoint"], registry=r
        )
        self.registrations = Counter(
            "gateway_client_registrations", "Clients registered, by kind (dcr or cimd).", ["kind"], registry=r
        )
        self.logins = Counter("gateway_logins", "Sign-in attempts, by outcome.", ["outcome"], registry=r)
        self.upstream_errors = Counter(
            "gateway_upstream_errors", "Upstream failures answered 502/504, by kind.", ["kind"], registry=r
        )
        self.connection_steps = Counter(
            "gateway_connection_steps",
            "Steps of clients' connection attempts (the flight recorder), by step, outcome and reason.",
            ["step", "outcome", "reason"],
            registry=r,
        )

        # The vault and /v1/proxy: "service" is a name from the configuration's services (else "other").
        self.vault_proxied = Counter(
            "gateway_vault_proxied_requests",
            "Calls through /v1/proxy, by service and status class of the answer (2xx, 4xx, 5xx).",
            ["service", "status_class"],
            registry=r,
        )
        self.vault_refreshes = Counter(
            "gateway_vault_refreshes", "Provider access tokens refreshed, by service.", ["service"], registry=r
        )
        self.vault_refresh_failures = Counter(
            "gateway_vault_refresh_failures",
            "Failed refreshes, by service and kind (refused: invalid_grant; failed: transient).",
            ["service", "kind"],
            registry=r,
        )
        self.vault_broken = Counter(
            "gateway_vault_broken_connections",
            "Connections marked broken (the user must reconnect), by service.",
            ["service"],
            registry=r,
        )
        self.vault_decryption_failures = Counter(
            "gateway_vault_decryption_failures",
            "Vault rows that could not be unsealed (missing or wrong encryption key), by service.",
            ["service"],
            registry=r,
        )
        self._series: dict[tuple[str, str, int], RequestSeries] = {}
        self._open_streams: dict[str, Gauge] = {}

    def open_streams_of(self, transport: str) -> Gauge:
        """``gateway_open_streams`` of one transport (``streamable_http`` or ``sse``), its label resolved once."""
        gauge = self._open_streams.get(transport)
        if gauge is None:
            gauge = self._open_streams[transport] = self.open_streams.labels(transport=transport)
        return gauge

    def request_series(self, route: str, method: str, status: int) -> RequestSeries:
        """The per-request series of one route, method and status (labels resolved once: every answer uses them)."""
        key = (route, method, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = RequestSeries(
                self.requests.labels(route=route, method=method, status=str(status)),
                self.request_seconds.labels(route=route),
                self.upstream_seconds.labels(route=route),
                self.overhead_seconds.labels(route=route),
            )
        return series


@dataclass(frozen=True, slots=True)
class RequestSeries:
    requests: Counter
    request_seconds: Histogram
    upstream_seconds: Histogram
    overhead_seconds: Histogram


METRICS = web.AppKey("metrics", Metrics)
