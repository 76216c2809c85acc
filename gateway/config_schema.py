"""The configuration's schema: every section as a frozen dataclass, and the defaults as named constants.

``gateway.config`` loads, substitutes and checks a YAML file into these (and re-exports them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NewType
from urllib.parse import urlsplit

from gateway.identity.config import IdentityConfig
from gateway.identity.provider_config import IdentityProvidersConfig
from gateway.policy.config import AuthorizationConfig
from gateway.proxy.headers import DEFAULT_IDENTITY_HEADER
from gateway.quota.config import QuotaConfig
from gateway.vault.config import ServicesConfig

DEFAULT_PUBLIC_URL = "http://127.0.0.1:8080"
DEFAULT_STORAGE_URL = "sqlite:///gateway.db"
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_FIRST_BYTE_TIMEOUT = 60.0
DEFAULT_STREAM_IDLE_TIMEOUT = 600.0
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_KEEPALIVE_TIMEOUT = 75.0
DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 256
DEFAULT_API_KEY_PREFIX = "mgw"
DEFAULT_LAST_USED_FLUSH_SECONDS = 30.0
DEFAULT_SESSION_MAX_AGE = 7 * 24 * 3600.0
DEFAULT_PROTECTIVE_WINDOW = 900.0
DEFAULT_USAGE_FLUSH_SECONDS = 30.0
DEFAULT_USAGE_CHART_DAYS = 14
MAX_USAGE_CHART_DAYS = 90
MCP_PATH = "/mcp"
DEFAULT_REVOCATION_CHANNEL = "mcp-gateway:revocations"
DEFAULT_STREAM_RECHECK_INTERVAL = 0.5
DEFAULT_MAX_CLOCK_SKEW = 30.0
MIN_SECRET_CHARS = 16
"""Shortest password accepted inside ``storage.url`` and ``redis.url``."""
MIN_METRICS_TOKEN_CHARS = 16
MAX_WORKERS = 1024

WorkerCount = NewType("WorkerCount", int)
"""``server.workers``: an integer ≥ 1, or ``auto`` in YAML (resolved when the configuration is read)."""


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    shutdown_timeout: float = 30.0
    """Seconds to let in-flight requests finish on shutdown before streams are closed."""
    workers: WorkerCount = WorkerCount(1)
    """Gateway processes sharing the listening socket (``auto``: the cores this process may run on)."""
    uvloop: bool = True
    """Run on uvloop when it is installed (false: the standard asyncio event loop)."""
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    """Seconds a client has to send a whole request head (from connecting, or from the first byte of the next
    request on a kept-alive connection); then the connection is closed."""
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    """Seconds a request body may make no progress while the gateway reads it; then the request ends with 408."""
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT
    """Seconds an idle kept-alive connection stays open (keep it longer than a front proxy's idle timeout)."""
    max_connections: int = 0
    """Open client connections at most; 0: the open-file limit less a reserve for the gateway's own sockets
    and files (upstream and storage pools plus 64)."""
    max_connections_per_address: int = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS
    """Open connections one client address (IPv6: one /64) may hold; 0: no cap (behind a front proxy)."""


@dataclass(frozen=True)
class UpstreamConfig:
    url: str = "http://127.0.0.1:9000/mcp"
    """The upstream MCP server's Streamable HTTP endpoint."""
    sse_url: str | None = None
    """The upstream's legacy HTTP+SSE endpoint (``GET``), if it has one."""
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    first_byte_timeout: float = DEFAULT_FIRST_BYTE_TIMEOUT
    """Seconds to wait for the upstream's response headers before answering 504."""
    stream_idle_timeout: float = DEFAULT_STREAM_IDLE_TIMEOUT
    """Seconds an open stream may stay silent before the gateway closes it (0: never)."""
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    identity_headers: bool = True
    """Send ``X-Gateway-*`` headers telling the upstream who is calling (unsigned: for a trusted network)."""
    identity_header: str | None = DEFAULT_IDENTITY_HEADER
    """The header carrying a signed identity JWT of the caller to the upstream (``gateway/identity/upstream.py``);
    empty or null: none. Needs ``identity.encryption_keys`` (the signing keys)."""
    identity_audience: str | None = None
    """The ``aud`` of that JWT; None: the origin of ``upstream.url`` (``scheme://host[:port]``)."""
    forward_headers: tuple[str, ...] = ()
    """Request headers forwarded to the upstream besides the MCP ones (``gateway/proxy/headers.py``)."""

    @property
    def audience(self) -> str:
        """The ``aud`` of the upstream's identity JWT: ``identity_audience``, else the origin of ``url``."""
        target = urlsplit(self.url)
        return self.identity_audience or f"{target.scheme}://{target.netloc}"


@dataclass(frozen=True)
class StorageConfig:
    url: str = DEFAULT_STORAGE_URL
    pool_min: int = 1
    pool_max: int = 10
    schema: str | None = None
    """PostgreSQL schema holding the gateway's tables (its ``search_path``); None: the server's default."""
    pgbouncer: bool = False
    """``storage.url`` reaches PostgreSQL through PgBouncer in transaction pooling mode."""


@dataclass(frozen=True)
class FlightRecorderConfig:
    enabled: bool = True
    retention: float = 86400.0
    """Seconds a client's or an account's recent connection steps are kept."""
    ring_size: int = 50
    """Steps kept per client, per account and per address."""
    anonymous_per_minute: int = 60
    """Failed steps of callers who proved no account, per address, replica and minute (ten addresses' worth in all);
    the rest are dropped."""


@dataclass(frozen=True)
class RedisConfig:
    url: str | None = None
    revocation_channel: str = DEFAULT_REVOCATION_CHANNEL
    """Pub/sub channel on which replicas announce revocations to each other."""
    cluster: bool = False
    """``url`` names one node of a Redis Cluster (the client discovers the others)."""


@dataclass(frozen=True)
class RevocationConfig:
    stream_recheck_interval: float = DEFAULT_STREAM_RECHECK_INTERVAL
    """Seconds between re-validations of the credentials of open streams (at most 0.5)."""


@dataclass(frozen=True)
class ProtectiveLimitsConfig:
    """Budgets of the authorization server's open endpoints, per ``window`` (``gateway.throttle.limits``)."""

    window: float = DEFAULT_PROTECTIVE_WINDOW
    """Seconds every budget below counts over (registration has its own hourly ones under ``oauth``)."""
    authorize_per_address: int = 100
    token_per_address: int = 50
    token_per_client: int = 20
    """Refused token requests per client *and* client address; past it, that address's failures for that client
    are 429 (a valid code or refresh token still gets its tokens). A client id is public: never per client alone."""
    revoke_per_address: int = 50
    revoke_per_client: int = 20
    """Revocations that revoked nothing, per client and client address."""
    cimd_fetches_per_address: int = 30
    """Metadata documents actually fetched (not cache hits) for one client address."""
    cimd_fetches_per_document: int = 10
    login_failures_per_account: int = 5
    """Failed sign-ins to one account from one client address; past it, that address waits for the window."""
    login_failures_per_address: int = 30
    login_failures_per_account_total: int = 10
    """Failed sign-ins to one account from all addresses; past it, each address gets one attempt per window for
    that account (slows distributed guessing, never locks the account)."""
    signups_per_address: int = 10
    """Dashboard sign-ups attempted from one client address per hour (every attempt counts)."""
    mcp_auth_failures_per_address: int = 1000
    """Refused credentials (401) on the MCP endpoints from one client address; past it, 429 before any lookup."""


@dataclass(frozen=True)
class LimitsConfig:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_header_bytes: int = 8190
    max_form_bytes: int = 16 * 1024
    """Largest body of an HTML form post and of an admin API call (413 above it, checked before buffering)."""
    session_max_age: float = DEFAULT_SESSION_MAX_AGE
    """Seconds after which a forgotten MCP session binding is purged."""
    protective: ProtectiveLimitsConfig = field(default_factory=ProtectiveLimitsConfig)


@dataclass(frozen=True)
class ApiKeysConfig:
    prefix: str = DEFAULT_API_KEY_PREFIX
    format: str = "checksummed"
    """``checksummed`` (``<prefix>_`` + 32 base62 + 6-character checksum) or ``hex32`` (``<prefix>_`` + 32 hex,
    the MCP Rank format: ``prefix: sk_mcp_rank``). Keys of the other shape are refused before any lookup."""
    last_used_flush_interval: float = DEFAULT_LAST_USED_FLUSH_SECONDS


@dataclass(frozen=True)
class SecurityConfig:
    allowed_origins: tuple[str, ...] = ()
    """Browser origins allowed to call ``/mcp`` besides ``public_url``'s own."""
    trusted_proxies: tuple[str, ...] = ()
    """Peer addresses whose ``X-Forwarded-For`` is believed."""
    max_clock_skew: float = DEFAULT_MAX_CLOCK_SKEW
    """Seconds this replica's clock may differ from PostgreSQL's before readiness fails (expiries are checked
    on the replica's clock, so this bounds how late a token can be accepted)."""


@dataclass(frozen=True)
class RegistrationConfig:
    enabled: bool = True
    max_body_bytes: int = 16 * 1024
    unused_client_ttl: float = 24 * 3600.0
    """Seconds after which a registered client that never completed an authorization is deleted."""
    max_clients: int = 100_000
    max_per_address_per_hour: int = 20
    """Registrations one client address may make per hour (all replicas together when Redis is set)."""
    max_per_hour: int = 1000
    """Registrations accepted per hour from all addresses (per replica without Redis)."""
    max_per_address_per_hour_when_busy: int = 2
    """While ``max_per_hour`` is spent, each address may still register this many per hour (never closed)."""
    private_use_schemes: tuple[str, ...] = ("cursor", "vscode", "vscode-insiders", "windsurf", "zed")
    """Private-use redirect schemes accepted besides reverse-domain ones (``com.example.app:``)."""


@dataclass(frozen=True)
class CimdConfig:
    enabled: bool = True
    allow_private_addresses: bool = False
    """Fetch metadata documents from loopback, private and link-local addresses (tests, private networks)."""
    timeout: float = 5.0
    max_bytes: int = 5 * 1024
    cache_min_ttl: float = 60.0
    cache_max_ttl: float = 24 * 3600.0
    ca_file: str | None = None
    """Extra CA bundle to trust for metadata document fetches."""


@dataclass(frozen=True)
class OAuthConfig:
    scopes_supported: tuple[str, ...] = ("mcp:tools",)
    default_scopes: tuple[str, ...] = ("mcp:tools",)
    """Granted when a client asks for no scope; also the ``scope`` of the 401 challenge."""
    access_token_ttl: float = 3600.0
    code_ttl: float = 600.0
    refresh_token_idle_ttl: float = 30 * 24 * 3600.0
    refresh_token_absolute_ttl: float = 90 * 24 * 3600.0
    refresh_grace_seconds: float = 30.0
    """Window in which the immediately previous refresh token gets the same new pair back (0 to 60)."""
    refresh_grace_max_replays: int = 3
    authorization_request_ttl: float = 600.0
    login_session_idle_ttl: float = 12 * 3600.0
    login_session_absolute_ttl: float = 7 * 24 * 3600.0
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    cimd: CimdConfig = field(default_factory=CimdConfig)


@dataclass(frozen=True)
class AccountsConfig:
    """Accounts and the dashboard. Dashboard sign-ins are the OAuth sign-in sessions (``oauth.login_session_*``)."""

    signup_enabled: bool = True
    """Anyone may create an account at ``/signup``; false for invitation-only or CLI-created accounts."""
    allowed_email_domains: tuple[str, ...] = ()
    """Sign-in with an identity provider only for verified e-mails in these domains (exact, any case); empty: any."""
    local_passwords: bool = True
    """Passwords at the sign-in and sign-up pages; false for deployments where people sign in only with a provider."""
    usage_flush_interval: float = DEFAULT_USAGE_FLUSH_SECONDS
    """Seconds between batched writes of the daily request counts shown in the dashboard's chart."""
    usage_chart_days: int = DEFAULT_USAGE_CHART_DAYS
    """Days of history in the dashboard's usage chart."""


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"
    format: str = "json"
    access_log: bool = True


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True
    """Serve ``GET /metrics`` (Prometheus text exposition)."""
    bearer_token: str = ""
    """When set, ``/metrics`` requires ``Authorization: Bearer <token>``; when empty it is open (internal network)."""


@dataclass(frozen=True)
class GatewayConfig:
    public_url: str = DEFAULT_PUBLIC_URL
    server: ServerConfig = field(default_factory=ServerConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    revocation: RevocationConfig = field(default_factory=RevocationConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    api_keys: ApiKeysConfig = field(default_factory=ApiKeysConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    oauth: OAuthConfig = field(default_factory=OAuthConfig)
    quota: QuotaConfig = field(default_factory=QuotaConfig)
    accounts: AccountsConfig = field(default_factory=AccountsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    flight_recorder: FlightRecorderConfig = field(default_factory=FlightRecorderConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    identity_providers: IdentityProvidersConfig = field(default_factory=IdentityProvidersConfig)
    services: ServicesConfig = field(default_factory=ServicesConfig)
    authorization: AuthorizationConfig = field(default_factory=AuthorizationConfig)

    @property
    def issuer(self) -> str:
        """The one exact issuer string, derived from ``public_url`` and never from request headers."""
        return self.public_url

    @property
    def mcp_resource(self) -> str:
        return self.public_url + MCP_PATH
