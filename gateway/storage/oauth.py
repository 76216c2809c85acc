"""Storage contracts for the OAuth 2.1 authorization server: clients, pending authorizations, codes,
token families and their tokens, remembered consents and browser login sessions.

Secrets are stored only as SHA-256 hex digests (``*_hash``); rows are marked used or revoked rather
than deleted, so a replayed secret is recognised as a replay. Every multi-row change that an attacker
could race (redeeming a code, rotating a refresh token, revoking a family) is one transaction whose
claim is a conditional update, never a read followed by a write.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Protocol


@dataclass(frozen=True, slots=True)
class OAuthClient:
    """A dynamically registered public client (RFC 7591). Client ID Metadata Documents are not stored here."""

    client_id: str
    client_name: str | None
    redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...]
    response_types: tuple[str, ...]
    scope: str | None
    application_type: str
    """``"native"`` or ``"web"``."""
    client_uri: str | None
    logo_uri: str | None
    metadata_hash: str
    """SHA-256 of the canonical registration metadata: identical registrations get the same client."""
    created_at: float
    last_used_at: float | None = None
    """Set when the client first completes an authorization; clients never used are reaped."""


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """A validated ``/authorize`` request waiting for login and consent, bound to one browser."""

    request_hash: str
    """SHA-256 of the random transaction id carried in the login and consent forms."""
    browser_hash: str
    """SHA-256 of the browser-binding cookie that was present when the request was made."""
    csrf_hash: str
    """SHA-256 of the CSRF token the consent form must echo."""
    client_id: str
    redirect_uri: str
    redirect_uri_given: bool
    state: str | None
    code_challenge: str
    scope: str
    resource: str
    created_at: float
    expires_at: float
    user_id: str | None = None
    """The user who logged in for this request (set after login)."""
    completed_at: float | None = None
    """Set once when the request was approved or denied; a second submission finds it completed."""


@dataclass(frozen=True, slots=True)
class AuthorizationCode:
    code_hash: str
    client_id: str
    user_id: str
    redirect_uri: str
    redirect_uri_given: bool
    """Whether ``redirect_uri`` was in the authorization request (then the token request must repeat it)."""
    code_challenge: str
    scope: str
    resource: str
    created_at: float
    expires_at: float
    used_at: float | None = None
    family_id: str | None = None
    """The token family its redemption created; revoked when the code is replayed."""
    failed_attempts: int = 0


@dataclass(frozen=True, slots=True)
class TokenFamily:
    """One grant: everything a single authorization (and its refreshes) issued to one client for one user."""

    family_id: str
    user_id: str
    client_id: str
    redirect_uri: str
    scope: str
    resource: str
    created_at: float
    expires_at: float
    """Absolute end of the family: refreshing never extends it."""
    last_used_at: float | None = None
    revoked_at: float | None = None
    revoked_reason: str | None = None


@dataclass(frozen=True, slots=True)
class AccessToken:
    token_hash: str
    family_id: str
    user_id: str
    client_id: str
    scope: str
    resource: str
    created_at: float
    expires_at: float
    revoked_at: float | None = None


@dataclass(frozen=True, slots=True)
class RefreshToken:
    token_hash: str
    family_id: str
    generation: int
    """1 for the token issued with the code, then +1 per rotation."""
    created_at: float
    expires_at: float
    """Idle expiry: a refresh token unused for this long is dead."""
    used_at: float | None = None
    """When it was rotated (retired)."""
    grace_until: float | None = None
    """Until when a replay of this retired token gets the same successor pair back."""
    grace_blob: bytes | None = None
    """The successor pair, encrypted under a key derived from this token (never in clear)."""
    grace_replays: int = 0


class RotateOutcome(Enum):
    ROTATED = "rotated"
    """The token was current: it is now retired and its successors are stored."""
    RETIRED = "retired"
    """The token was already rotated: a replay (grace) or a reuse (attack); nothing written."""
    DEAD = "dead"
    """Missing, expired, or its family revoked or expired; nothing written."""


@dataclass(frozen=True, slots=True)
class Consent:
    user_id: str
    client_id: str
    redirect_uri: str
    resource: str
    scope: str
    created_at: float
    """First approval."""
    updated_at: float


@dataclass(frozen=True, slots=True)
class BrowserSession:
    session_hash: str
    user_id: str
    created_at: float
    last_seen_at: float
    expires_at: float
    """Absolute expiry; the idle timeout is checked against ``last_seen_at``."""
    revoked_at: float | None = None


class ClientStore(Protocol):
    async def create_client(self, client: OAuthClient) -> OAuthClient:
        """Insert a client. If one with the same ``metadata_hash`` exists, return it unchanged instead."""
        ...

    async def get_client(self, client_id: str) -> OAuthClient | None: ...

    async def mark_client_used(self, client_id: str, now: float) -> None:
        """Set ``last_used_at`` (absent clients are ignored)."""
        ...

    async def delete_unused_clients(self, *, created_before: float) -> int:
        """Delete clients never used and created before the time; returns how many went."""
        ...

    async def count_clients(self) -> int: ...


class AuthorizationRequestStore(Protocol):
    async def create_authorization_request(self, request: AuthorizationRequest) -> None: ...

    async def get_authorization_request(self, request_hash: str) -> AuthorizationRequest | None: ...

    async def set_authorization_user(self, request_hash: str, user_id: str) -> bool:
        """Record who logged in for a pending request; False when absent or completed."""
        ...

    async def complete_authorization_request(self, request_hash: str, *, now: float) -> bool:
        """Claim the request for approval or denial: True exactly once (conditional update), then False."""
        ...

    async def purge_authorization_requests(self, *, expired_before: float) -> int: ...


class GrantStore(Protocol):
    async def create_code(self, code: AuthorizationCode) -> None: ...

    async def get_code(self, code_hash: str) -> AuthorizationCode | None:
        """The code row, used or not; None when absent."""
        ...

    async def record_code_failure(self, code_hash: str, *, max_failures: int, now: float) -> None:
        """Count a failed redemption (bad verifier); at ``max_failures`` the code is marked used."""
        ...

    async def redeem_code(
        self,
        code_hash: str,
        *,
        now: float,
        family: TokenFamily,
        access: AccessToken,
        refresh: RefreshToken | None,
    ) -> bool:
        """In one transaction: claim the code (unused and unexpired at ``now``), link it to ``family.family_id``,
        insert the family and its tokens. False, with nothing written, when the claim fails: of concurrent
        redemptions exactly one returns True."""
        ...

    async def get_family(self, family_id: str) -> TokenFamily | None: ...

    async def get_access_token(self, token_hash: str) -> AccessToken | None: ...

    async def get_refresh_token(self, token_hash: str) -> RefreshToken | None: ...

    async def rotate_refresh_token(
        self,
        token_hash: str,
        *,
        now: float,
        access: AccessToken,
        refresh: RefreshToken,
        grace_until: float,
        grace_blob: bytes,
    ) -> RotateOutcome:
        """In one transaction: retire the token if it is the current, unexpired one of a live family (conditional
        update on ``used_at IS NULL``), store ``grace_until``/``grace_blob`` on it, insert the successors and set
        the family's ``last_used_at``. Of concurrent rotations of one token exactly one gets ``ROTATED``."""
        ...

    async def count_grace_replay(self, token_hash: str, *, max_replays: int, now: float) -> bool:
        """Atomically take one grace replay of a retired token: True while ``grace_until > now`` and fewer than
        ``max_replays`` were taken, and its family is live; False otherwise."""
        ...

    async def revoke_family(self, family_id: str, *, now: float, reason: str) -> bool:
        """Revoke the family, its access tokens and its refresh tokens (grace blobs erased).
        True when this call revoked it, False when absent or already revoked."""
        ...

    async def revoke_access_token(self, token_hash: str, *, now: float) -> bool:
        """True when this call revoked it."""
        ...

    async def list_families(self, user_id: str, *, include_revoked: bool = False) -> list[TokenFamily]:
        """A user's families, newest first."""
        ...

    async def revoke_user_families(
        self, user_id: str, *, now: float, reason: str, client_id: str | None = None, redirect_uri: str | None = None
    ) -> list[str]:
        """Revoke the user's live families (of one client, and one redirect URI, when given) and their
        unredeemed codes; returns the revoked family ids."""
        ...

    async def touch_families(self, last_used: Mapping[str, float]) -> None:
        """Record ``last_used_at`` for many families in one round trip; never moves a time backwards."""
        ...

    async def purge_expired_tokens(self, *, before: float) -> int:
        """Delete codes, access tokens and refresh tokens that expired before the time (and families that
        ended before it); returns how many rows went."""
        ...


class ConsentStore(Protocol):
    async def get_consent(self, user_id: str, client_id: str, redirect_uri: str, resource: str) -> Consent | None: ...

    async def save_consent(self, consent: Consent) -> None:
        """Insert, or update ``scope`` and ``updated_at`` keeping the first ``created_at``."""
        ...

    async def list_consents(self, user_id: str) -> list[Consent]:
        """The user's remembered consents, oldest first."""
        ...

    async def users_of_client(self, client_id: str) -> list[str]:
        """Ids of the users holding a grant family (live or not) or a remembered consent of ``client_id``,
        sorted: whom an operator's "revoke this client everywhere" has to visit."""
        ...

    async def forget_consents(self, user_id: str, client_id: str, redirect_uri: str | None = None) -> int: ...


class BrowserSessionStore(Protocol):
    async def create_browser_session(self, session: BrowserSession) -> None: ...

    async def get_browser_session(self, session_hash: str) -> BrowserSession | None: ...

    async def touch_browser_session(self, session_hash: str, now: float) -> None: ...

    async def revoke_browser_session(self, session_hash: str, *, now: float) -> None: ...

    async def revoke_user_browser_sessions(self, user_id: str, *, now: float) -> int: ...

    async def purge_browser_sessions(self, *, ended_before: float, idle_since: float) -> int:
        """Delete sessions that are over: expired or revoked before ``ended_before``, or not seen since
        ``idle_since``. Returns how many went."""
        ...
