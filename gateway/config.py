"""Gateway configuration: one YAML file, loaded into a frozen, typed tree.

``${NAME}`` references are replaced by environment variables (``${NAME:-default}`` gives a default).
Unknown keys are rejected and every problem is reported at once, each with its path
(``upstream.connect_timeout: expected a number``). Defaults are named constants below.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from gateway.apikeys import FORMATS as API_KEY_FORMATS
from gateway.config_parsing import build_dataclass, substitute_env
from gateway.config_schema import (
    DEFAULT_API_KEY_PREFIX,
    DEFAULT_STREAM_RECHECK_INTERVAL,
    MAX_USAGE_CHART_DAYS,
    MAX_WORKERS,
    MCP_PATH,
    MIN_METRICS_TOKEN_CHARS,
    MIN_SECRET_CHARS,
    AccountsConfig,
    CimdConfig,
    GatewayConfig,
    LimitsConfig,
    OAuthConfig,
    ProtectiveLimitsConfig,
    RegistrationConfig,
    WorkerCount,
)
from gateway.identity.config import check_identity
from gateway.identity.provider_config import IdentityProvidersConfig, parse_identity_providers
from gateway.policy.config import AuthorizationConfig, merged_scopes, parse_authorization_config
from gateway.proxy.headers import forwardable_problem, identity_header_problems
from gateway.quota.config import QuotaConfig, parse_quota_config
from gateway.vault.config import ServicesConfig, check_services, parse_services

__all__ = [  # what other modules import from here (the rest of the schema: gateway.config_schema)
    "DEFAULT_API_KEY_PREFIX",
    "MCP_PATH",
    "AccountsConfig",
    "CimdConfig",
    "ConfigError",
    "GatewayConfig",
    "LimitsConfig",
    "OAuthConfig",
    "ProtectiveLimitsConfig",
    "RegistrationConfig",
    "available_cores",
    "load_config",
    "parse_config",
    "parse_workers",
    "workers_problems",
]

_PREFIX_RE = re.compile(r"^[a-z][a-z0-9_]{0,14}[a-z0-9]$")
_EMAIL_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$")
_CHANNEL_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists every problem with its path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read, substitute, validate. Raises ``ConfigError`` listing every problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror})"]) from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML ({exc})"]) from exc
    return parse_config(raw if raw is not None else {}, env=os.environ if env is None else env)


def parse_config(raw: object, env: Mapping[str, str] | None = None) -> GatewayConfig:
    problems: list[str] = []
    substituted = substitute_env(raw, env if env is not None else os.environ, problems)
    config = build_dataclass(
        GatewayConfig,
        substituted,
        problems,
        parsers={
            QuotaConfig: parse_quota_config,
            IdentityProvidersConfig: parse_identity_providers,
            ServicesConfig: parse_services,
            WorkerCount: _parse_workers,
            AuthorizationConfig: parse_authorization_config,
        },
    )
    if not isinstance(config, GatewayConfig):
        raise ConfigError(problems)
    # The policy's scopes are OAuth scopes too (metadata, registration, /authorize).
    oauth = dataclasses.replace(
        config.oauth, scopes_supported=merged_scopes(config.oauth.scopes_supported, config.authorization)
    )
    config = dataclasses.replace(config, oauth=oauth)
    problems.extend(_check(config))
    if problems:
        raise ConfigError(problems)
    return _normalise(config)


def _check_redis_cluster(url: str | None) -> list[str]:
    if not url:
        return ["redis.cluster: needs redis.url (any one node of the cluster)"]
    if not url.startswith(("redis://", "rediss://")):
        return ["redis.cluster: redis.url must be redis:// or rediss:// (a node's host and port)"]
    if urlsplit(url).path.strip("/") not in ("", "0"):
        return ["redis.cluster: a Redis Cluster has database 0 only (redis.url ending in /0 or no path)"]
    return []


def _check(c: GatewayConfig) -> list[str]:
    problems: list[str] = []
    for i, proxy in enumerate(c.security.trusted_proxies):
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            problems.append(f"security.trusted_proxies[{i}]: expected an IP address or a CIDR range")
    flight = c.flight_recorder
    if not 1 <= flight.ring_size <= 1000 or flight.retention < 60 or flight.anonymous_per_minute < 0:
        problems.append(
            "flight_recorder: ring_size must be 1-1000, retention at least 60 seconds, anonymous_per_minute 0 or more"
        )
    # The issuer and the well-known documents live at the root of public_url's origin.
    problems += _check_http_url("public_url", c.public_url, allow_path=False)
    if urlsplit(c.public_url).query or urlsplit(c.public_url).fragment:
        problems.append("public_url: must not have a query or fragment")
    problems += _check_http_url("upstream.url", c.upstream.url, allow_path=True)
    if c.upstream.sse_url is not None:
        problems += _check_http_url("upstream.sse_url", c.upstream.sse_url, allow_path=True)
    if not (c.storage.url.startswith("sqlite:///") or c.storage.url.startswith(("postgresql://", "postgres://"))):
        problems.append("storage.url: expected sqlite:///PATH or postgresql://...")
    if c.redis.url and not c.redis.url.startswith(("redis://", "rediss://", "unix://")):
        problems.append("redis.url: expected redis://, rediss:// or unix://")
    if c.redis.cluster:
        problems += _check_redis_cluster(c.redis.url)
    if not _CHANNEL_RE.match(c.redis.revocation_channel):
        problems.append("redis.revocation_channel: 1-128 characters: letters, digits, and . _ : -")
    if c.storage.schema is not None:
        if not _SCHEMA_RE.match(c.storage.schema):
            problems.append("storage.schema: a PostgreSQL identifier (letters, digits, _; at most 63)")
        elif c.storage.url.startswith("sqlite:"):
            problems.append("storage.schema: only applies to PostgreSQL")
    if not 0 < c.revocation.stream_recheck_interval <= DEFAULT_STREAM_RECHECK_INTERVAL:
        problems.append("revocation.stream_recheck_interval: greater than 0 and at most 0.5 seconds")
    for name, value in [
        ("upstream.connect_timeout", c.upstream.connect_timeout),
        ("upstream.first_byte_timeout", c.upstream.first_byte_timeout),
        ("api_keys.last_used_flush_interval", c.api_keys.last_used_flush_interval),
        ("limits.session_max_age", c.limits.session_max_age),
        ("server.shutdown_timeout", c.server.shutdown_timeout),
        ("server.header_timeout", c.server.header_timeout),
        ("server.body_timeout", c.server.body_timeout),
        ("server.keepalive_timeout", c.server.keepalive_timeout),
        ("accounts.usage_flush_interval", c.accounts.usage_flush_interval),
        ("security.max_clock_skew", c.security.max_clock_skew),
    ]:
        if value <= 0:
            problems.append(f"{name}: must be greater than 0")
    if c.metrics.bearer_token and len(c.metrics.bearer_token) < MIN_METRICS_TOKEN_CHARS:
        problems.append(f"metrics.bearer_token: use at least {MIN_METRICS_TOKEN_CHARS} characters (or leave it empty)")
    for i, name in enumerate(c.upstream.forward_headers):
        if (why := forwardable_problem(name)) is not None:
            problems.append(f"upstream.forward_headers[{i}]: {why}")
    problems += identity_header_problems(
        c.upstream.identity_header,
        c.upstream.identity_audience,
        forward_headers=c.upstream.forward_headers,
        app_audience=c.identity.audience,
    )
    if c.upstream.stream_idle_timeout < 0:
        problems.append("upstream.stream_idle_timeout: must be 0 (never) or more")
    for name, ivalue, low in [
        ("server.port", c.server.port, 0),
        ("server.max_connections", c.server.max_connections, 0),
        ("server.max_connections_per_address", c.server.max_connections_per_address, 0),
        ("upstream.max_connections", c.upstream.max_connections, 1),
        ("limits.max_body_bytes", c.limits.max_body_bytes, 1024),
        ("limits.max_header_bytes", c.limits.max_header_bytes, 1024),
        ("limits.max_form_bytes", c.limits.max_form_bytes, 1024),
        ("storage.pool_min", c.storage.pool_min, 1),
        ("storage.pool_max", c.storage.pool_max, 1),
    ]:
        if ivalue < low:
            problems.append(f"{name}: must be at least {low}")
    if not 1 <= c.accounts.usage_chart_days <= MAX_USAGE_CHART_DAYS:
        problems.append(f"accounts.usage_chart_days: between 1 and {MAX_USAGE_CHART_DAYS}")
    for i, domain in enumerate(c.accounts.allowed_email_domains):
        if not _EMAIL_DOMAIN_RE.match(domain):
            problems.append(f"accounts.allowed_email_domains[{i}]: a domain such as corp.example (no '@')")
    if not c.accounts.local_passwords and not c.identity_providers.providers:
        problems.append("accounts.local_passwords: false needs at least one identity_providers entry to sign in with")
    if c.server.port > 65535:
        problems.append("server.port: must be at most 65535")
    if c.storage.pool_max < c.storage.pool_min:
        problems.append("storage.pool_max: must be at least storage.pool_min")
    if not _PREFIX_RE.match(c.api_keys.prefix):
        problems.append(
            "api_keys.prefix: 2-16 characters, lowercase letters, digits and underscores, starting with a letter"
        )
    if c.api_keys.format not in API_KEY_FORMATS:
        problems.append(f"api_keys.format: one of {', '.join(API_KEY_FORMATS)}")
    for i, origin in enumerate(c.security.allowed_origins):
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("",):
            problems.append(f"security.allowed_origins[{i}]: expected scheme://host[:port] with no path")
    problems += _check_oauth(c.oauth)
    problems += check_identity(c.identity)
    problems += check_services(c.services, c.identity_providers)
    protective = c.limits.protective
    if protective.window <= 0:
        problems.append("limits.protective.window: must be greater than 0")
    for f in dataclasses.fields(protective):
        if f.name != "window" and getattr(protective, f.name) < 1:
            problems.append(f"limits.protective.{f.name}: must be at least 1")
    problems += _check_secret("storage.url", c.storage.url)
    if c.redis.url:
        problems += _check_secret("redis.url", c.redis.url)
    if c.logging.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        problems.append("logging.level: expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    if c.logging.format not in ("json", "text"):
        problems.append("logging.format: expected json or text")
    return problems


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and ``taskset`` narrow)."""
    return len(os.sched_getaffinity(0))


def parse_workers(raw: object) -> int:
    """A worker count from YAML or ``--workers``: an integer from 1 to ``MAX_WORKERS``, or ``auto``."""
    if raw == "auto":
        return available_cores()
    if isinstance(raw, str) and raw.isdigit():
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_WORKERS:
        raise ValueError(f"expected auto or an integer from 1 to {MAX_WORKERS}")
    return raw


def _parse_workers(raw: object, path: str) -> tuple[WorkerCount, list[str]]:
    try:
        return WorkerCount(parse_workers(raw)), []
    except ValueError as exc:
        return WorkerCount(1), [f"{path}: {exc}"]


def workers_problems(c: GatewayConfig, workers: int) -> list[str]:
    """Several workers without ``redis.url`` would each keep their own quota counters and stream leases, so every
    limited plan would silently allow ``workers`` times its caps: ``serve`` refuses that combination (checked there,
    with ``--workers`` applied; other commands do not care how many workers serve)."""
    if workers <= 1 or c.redis.url:
        return []
    limited = [name for name, plan in sorted(c.quota.plans.items()) if not plan.unlimited]
    if not limited and c.quota.max_concurrent_streams is None:
        return []
    multiplied = [f"the caps of plan(s) {', '.join(limited)}"] if limited else []
    if c.quota.max_concurrent_streams is not None:
        multiplied.append("quota.max_concurrent_streams")
    return [
        f"server.workers: {workers} workers without redis.url would each count the quota on their own, "
        f"multiplying {' and '.join(multiplied)} by {workers}; set redis.url (one shared counter), "
        "or serve with one worker, or make every plan unlimited and quota.max_concurrent_streams null"
    ]


_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")  # RFC 6749 §3.3 scope-token


def _check_oauth(o: OAuthConfig) -> list[str]:
    problems: list[str] = []
    for i, scope in enumerate(o.scopes_supported):
        if not _SCOPE_TOKEN.match(scope):
            problems.append(f"oauth.scopes_supported[{i}]: not a valid scope token")
    if "offline_access" in o.scopes_supported:
        problems.append("oauth.scopes_supported: offline_access is handled by the gateway; do not list it")
    if not o.default_scopes:
        problems.append("oauth.default_scopes: at least one scope")
    for i, scope in enumerate(o.default_scopes):
        if scope not in o.scopes_supported:
            problems.append(f"oauth.default_scopes[{i}]: {scope!r} is not in oauth.scopes_supported")
    if not 0 < o.code_ttl <= 600:
        problems.append("oauth.code_ttl: between 0 and 600 seconds")
    if not 0 <= o.refresh_grace_seconds <= 60:
        problems.append("oauth.refresh_grace_seconds: between 0 and 60 seconds")
    for name, value in [
        ("oauth.access_token_ttl", o.access_token_ttl),
        ("oauth.refresh_token_idle_ttl", o.refresh_token_idle_ttl),
        ("oauth.refresh_token_absolute_ttl", o.refresh_token_absolute_ttl),
        ("oauth.authorization_request_ttl", o.authorization_request_ttl),
        ("oauth.login_session_idle_ttl", o.login_session_idle_ttl),
        ("oauth.login_session_absolute_ttl", o.login_session_absolute_ttl),
        ("oauth.registration.unused_client_ttl", o.registration.unused_client_ttl),
        ("oauth.cimd.timeout", o.cimd.timeout),
    ]:
        if value <= 0:
            problems.append(f"{name}: must be greater than 0")
    r = o.registration
    if min(r.max_per_address_per_hour, r.max_per_hour, r.max_per_address_per_hour_when_busy) < 1:
        problems.append(
            "oauth.registration: max_per_address_per_hour, max_per_hour and"
            " max_per_address_per_hour_when_busy must be at least 1"
        )
    if o.refresh_grace_max_replays < 0:
        problems.append("oauth.refresh_grace_max_replays: must be 0 or more")
    if o.cimd.cache_max_ttl < o.cimd.cache_min_ttl:
        problems.append("oauth.cimd.cache_max_ttl: must be at least oauth.cimd.cache_min_ttl")
    if o.cimd.max_bytes < 256 or o.registration.max_body_bytes < 1024:
        problems.append("oauth: cimd.max_bytes at least 256 and registration.max_body_bytes at least 1024")
    for i, scheme in enumerate(o.registration.private_use_schemes):
        if not re.match(r"^[a-z][a-z0-9+.-]*$", scheme) or scheme in ("http", "https", "javascript", "data", "file"):
            problems.append(f"oauth.registration.private_use_schemes[{i}]: not an acceptable scheme")
    return problems


def _check_secret(name: str, url: str) -> list[str]:
    """A password in a service URL must not be empty or weak (never echoed back in the message)."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return [f"{name}: not a valid URL"]
    if password is None:
        return []
    if len(password) < MIN_SECRET_CHARS:
        return [f"{name}: the password is empty or weak (at least {MIN_SECRET_CHARS} characters; pass it as ${{ENV}})"]
    return []


def _check_http_url(name: str, url: str, *, allow_path: bool) -> list[str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [f"{name}: expected an http:// or https:// URL"]
    if parts.username or parts.password:
        return [f"{name}: must not contain credentials"]
    if not allow_path and parts.path not in ("", "/"):
        return [f"{name}: must not have a path"]
    return []


def _normalise(c: GatewayConfig) -> GatewayConfig:
    """Canonical forms: ``public_url`` with lowercase scheme and host and no trailing slash."""
    parts = urlsplit(c.public_url)
    netloc = parts.netloc.lower()
    public_url = f"{parts.scheme.lower()}://{netloc}{parts.path.rstrip('/')}"
    origins = tuple(o.lower().rstrip("/") for o in c.security.allowed_origins)
    return dataclasses.replace(
        c,
        public_url=public_url,
        redis=dataclasses.replace(c.redis, url=c.redis.url or None),
        security=dataclasses.replace(c.security, allowed_origins=origins),
        logging=dataclasses.replace(c.logging, level=c.logging.level.upper()),
    )
