"""Storage contracts: narrow typed Protocols, one per concern, and the rows they return.

Every backend (SQLite, PostgreSQL) implements all of them and passes the same conformance suite
(``tests/storage/test_conformance.py``). Times are seconds since the epoch as floats, taken from the
caller's clock, never from the database, so tests can move time. Secrets never reach storage: API keys
are stored as the SHA-256 hex digest of the full key, MCP session ids likewise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from gateway.storage.app_flow import AppFlowStore
from gateway.storage.identity import SigningKeyStore
from gateway.storage.identity_links import IdentityLinkStore, PendingSignInStore
from gateway.storage.oauth import (
    AuthorizationRequestStore,
    BrowserSessionStore,
    ClientStore,
    ConsentStore,
    GrantStore,
)
from gateway.storage.trail import TrailStore
from gateway.storage.vault import VaultStore

ROLES = ("user", "admin")


class StorageError(Exception):
    """Base class for storage failures."""


class StorageUnavailable(StorageError):
    """The backend could not be reached or timed out; callers answer 503, never 401."""


class Contention(StorageUnavailable):
    """A deadlock or serialization failure rolled the work back; running it again may succeed (else 503)."""


class Conflict(StorageError):
    """A uniqueness rule was violated (for example, an email already registered)."""


class SchemaOutOfDate(StorageError):
    """The database schema is older (or newer) than this release; run ``mcp-gateway migrate``."""


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    password_hash: str
    created_at: float
    disabled_at: float | None = None
    plan: str | None = None
    """The account's quota plan; None means the configured default plan."""
    role: str = "user"
    """``"user"`` or ``"admin"`` (admins may use the admin API); set with ``mcp-gateway users set-role``."""

    @property
    def active(self) -> bool:
        return self.disabled_at is None


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    user_id: str
    name: str
    key_hash: str
    """SHA-256 hex digest of the whole key; the key itself is never stored."""
    display_prefix: str
    """The fixed prefix plus the first characters of the key, safe to show (``mgw_AbCd``)."""
    last_four: str
    created_at: float
    expires_at: float | None = None
    last_used_at: float | None = None
    revoked_at: float | None = None
    scope: str | None = None
    """The space-separated scopes the key holds (``authorization`` policy); None: everything, as before."""

    def usable_at(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True, slots=True)
class McpSession:
    """An MCP session (Streamable HTTP ``Mcp-Session-Id`` or legacy SSE ``session_id``) bound to its opener."""

    session_hash: str
    user_id: str
    kind: str
    """``"streamable"`` or ``"legacy_sse"``."""
    upstream_path: str
    """For legacy SSE: the upstream's message path (without the session id); empty otherwise."""
    created_at: float


class UserStore(Protocol):
    async def create_user(self, *, user_id: str, email: str, password_hash: str, now: float) -> User:
        """Insert a user. Emails are compared case-insensitively; raises ``Conflict`` when taken."""
        ...

    async def get_user(self, user_id: str) -> User | None:
        """Return the user, or None when absent."""
        ...

    async def get_user_by_email(self, email: str) -> User | None:
        """Case-insensitive lookup; None when absent."""
        ...

    async def list_users(self) -> list[User]:
        """All users, oldest first."""
        ...

    async def set_password_hash(self, user_id: str, password_hash: str) -> bool:
        """Replace the password hash; False when the user does not exist."""
        ...

    async def set_disabled(self, user_id: str, disabled_at: float | None) -> bool:
        """Disable (a time) or re-enable (None) a user; False when the user does not exist."""
        ...

    async def set_plan(self, user_id: str, plan: str | None) -> bool:
        """Set the account's plan (None: the default plan); False when the user does not exist."""
        ...

    async def set_role(self, user_id: str, role: str) -> bool:
        """Set the account's role (``ROLES``); False when the user does not exist."""
        ...


class ApiKeyStore(Protocol):
    async def create_api_key(self, key: ApiKey) -> None:
        """Insert a key row (its hash, never the key). Raises ``Conflict`` on a duplicate id or hash."""
        ...

    async def get_api_key_by_hash(self, key_hash: str) -> ApiKey | None:
        """Return the key row for this hash, revoked or not; None when absent."""
        ...

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        """Return the key row by id; None when absent."""
        ...

    async def list_api_keys(self, user_id: str | None = None) -> list[ApiKey]:
        """Keys of one user (or of everyone when None), oldest first, revoked ones included."""
        ...

    async def revoke_api_key(self, key_id: str, *, now: float, user_id: str | None = None) -> bool:
        """Mark the key revoked. When ``user_id`` is given the key must belong to that user.

        Returns True when this call revoked it, False when absent, not the user's, or already revoked.
        """
        ...

    async def touch_api_keys(self, last_used: Mapping[str, float]) -> None:
        """Record ``last_used_at`` for many keys in one round trip; never moves a time backwards."""
        ...


class UsageStore(Protocol):
    async def add_usage(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Add ``counts`` (keyed by user id and UTC day ``YYYY-MM-DD``) to the stored daily totals, in one
        transaction; additive, so batches from several replicas sum up. Unknown users are skipped."""
        ...

    async def usage_history(self, user_id: str, *, since_day: str) -> list[tuple[str, int]]:
        """The user's daily totals from ``since_day`` on, oldest first; days without requests are absent."""
        ...


class RevocationWatermark(Protocol):
    async def revocation_epoch(self) -> int:
        """A counter every committed revocation raises (API key or access token revoked, grant family revoked,
        user disabled or deleted; raised by the database itself, in the same transaction). Equal readings mean
        nothing was revoked in between."""
        ...


class McpSessionStore(Protocol):
    async def bind_session(self, session: McpSession) -> None:
        """Record who opened a session. Binding the same hash again keeps the first owner."""
        ...

    async def get_session(self, session_hash: str) -> McpSession | None:
        """The binding, or None when absent."""
        ...

    async def forget_session(self, session_hash: str) -> None:
        """Remove a binding; absent is not an error."""
        ...

    async def purge_sessions(self, *, created_before: float) -> int:
        """Delete bindings created before the given time; returns how many went."""
        ...


class Storage(
    UserStore,
    ApiKeyStore,
    UsageStore,
    RevocationWatermark,
    McpSessionStore,
    ClientStore,
    AuthorizationRequestStore,
    GrantStore,
    ConsentStore,
    BrowserSessionStore,
    TrailStore,
    SigningKeyStore,
    IdentityLinkStore,
    PendingSignInStore,
    AppFlowStore,
    VaultStore,
    Protocol,
):
    """One backend: all the stores plus its lifecycle."""

    async def open(self) -> None:
        """Connect (a pool for PostgreSQL). Does not migrate."""
        ...

    async def close(self) -> None: ...

    async def migrate(self) -> list[int]:
        """Apply pending migrations in order, each in its own transaction; returns the versions applied."""
        ...

    async def check_schema(self) -> None:
        """Raise ``SchemaOutOfDate`` unless every known migration is applied (and none unknown)."""
        ...

    async def ping(self) -> float | None:
        """A cheap round trip; raises ``StorageUnavailable`` when the backend is unreachable. Returns the database
        server's clock (seconds since the epoch), or None when the database shares this host's clock (SQLite)."""
        ...
