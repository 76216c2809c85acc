"""Persistent storage: the contracts of :mod:`gateway.storage.base` and a factory for the backends."""

from __future__ import annotations

from gateway.storage.base import (
    ROLES,
    ApiKey,
    ApiKeyStore,
    Conflict,
    McpSession,
    McpSessionStore,
    SchemaOutOfDate,
    Storage,
    StorageError,
    StorageUnavailable,
    UsageStore,
    User,
    UserStore,
)
from gateway.storage.oauth import (
    AccessToken,
    AuthorizationCode,
    AuthorizationRequest,
    AuthorizationRequestStore,
    BrowserSession,
    BrowserSessionStore,
    ClientStore,
    Consent,
    ConsentStore,
    GrantStore,
    OAuthClient,
    RefreshToken,
    RotateOutcome,
    TokenFamily,
)

__all__ = [
    "ROLES",
    "AccessToken",
    "ApiKey",
    "ApiKeyStore",
    "AuthorizationCode",
    "AuthorizationRequest",
    "AuthorizationRequestStore",
    "BrowserSession",
    "BrowserSessionStore",
    "ClientStore",
    "Conflict",
    "Consent",
    "ConsentStore",
    "GrantStore",
    "McpSession",
    "McpSessionStore",
    "OAuthClient",
    "RefreshToken",
    "RotateOutcome",
    "SchemaOutOfDate",
    "Storage",
    "StorageError",
    "StorageUnavailable",
    "TokenFamily",
    "UsageStore",
    "User",
    "UserStore",
    "open_storage",
]

_SQLITE_PREFIX = "sqlite:///"
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_storage(
    url: str, *, pool_min: int = 1, pool_max: int = 10, search_path: str | None = None, pgbouncer: bool = False
) -> Storage:
    """Build (without connecting) the backend named by ``url``; the caller awaits ``open()``.

    ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` selects SQLite (the pool and
    ``search_path`` arguments do not apply); ``postgresql://…`` or ``postgres://…`` selects PostgreSQL (through
    PgBouncer in transaction pooling mode when ``pgbouncer``).
    Anything else raises ``ValueError``.
    """
    if url.startswith(_SQLITE_PREFIX):
        path = url[len(_SQLITE_PREFIX) :]
        if not path or path == ":memory:":
            raise ValueError(f"storage URL {url!r} needs a database file path, as in sqlite:///gateway.db")
        from gateway.storage.sqlite import SqliteStorage

        return SqliteStorage(path)
    if url.startswith(_POSTGRES_SCHEMES):
        from gateway.storage.postgres import PostgresStorage

        return PostgresStorage(url, pool_min=pool_min, pool_max=pool_max, search_path=search_path, pgbouncer=pgbouncer)
    scheme = url.split("://", 1)[0] if "://" in url else url[:20]
    raise ValueError(
        f"unsupported storage URL scheme {scheme!r}: use sqlite:///path/to/gateway.db "
        "or postgresql://user@host:5432/dbname"
    )
