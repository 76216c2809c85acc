"""What a verified credential proves (``Principal``, until when: ``Verified``) and why one is refused (``Refusal``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gateway.revocation import Revocation

UNKNOWN_OR_REVOKED = "The credential is unknown, expired or revoked"


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    email: str
    method: Literal["api_key", "oauth"]
    credential_id: str
    """The API key id, or the OAuth token family id."""
    client_id: str | None = None
    scope: str | None = None
    plan: str | None = None
    """The account's quota plan (None: the default plan)."""

    def revoked_by(self, revocation: Revocation) -> bool:
        """Whether ``revocation`` names this principal's credential (or all of its account's)."""
        if revocation.all_credentials and revocation.account_id == self.user_id:
            return True
        if self.method == "oauth":
            return self.credential_id in revocation.family_ids
        return self.credential_id in revocation.api_key_ids


@dataclass(frozen=True, slots=True)
class Verified:
    """A credential found valid: who it proves, and when it expires (wall clock; None: never)."""

    principal: Principal
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a credential is refused: ``reason`` is one of ``gateway.metrics.AUTH_FAILURE_REASONS`` (the metric
    label), ``description`` the short safe text of the 401."""

    reason: str
    description: str = UNKNOWN_OR_REVOKED
    client_id: str | None = None
    account_id: str | None = None
    """Whose credential it was, when the refusal found out (revoked, wrong audience, disabled): for the flight
    recorder, never for the response."""
