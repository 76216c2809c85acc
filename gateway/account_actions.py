"""What a person (dashboard), an administrator (admin API) or an operator (CLI) does to an account's access.

Every action commits to storage first, then announces the revocation (so every replica drops its cached
validations), records one audit event (ids only, never a secret) and counts it in ``gateway_revocations``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.audit import AuditLog
from gateway.authorized_apps import AuthorizedApp
from gateway.clock import Clock
from gateway.metrics import REVOCATION_SOURCES, Metrics, bounded
from gateway.revocation import Revocation, RevocationBus
from gateway.storage.base import Storage, User

APP_REVOKED = "revoked_by_user"


@dataclass(frozen=True)
class AccountActions:
    storage: Storage
    bus: RevocationBus
    audit: AuditLog
    metrics: Metrics
    clock: Clock
    source: str
    """``"dashboard"``, ``"admin"`` or ``"cli"``: the revocation's source label."""
    actor: str
    """Who acts, for the audit log: the account id, ``"admin:<id>"`` or ``"cli"``."""

    async def _announce(
        self, user_id: str, *, families: Sequence[str] = (), keys: Sequence[str] = (), every: bool = False
    ) -> None:
        now = self.clock.now()
        await self.bus.announce(
            Revocation(
                account_id=user_id,
                committed_at=now,
                family_ids=tuple(families),
                api_key_ids=tuple(keys),
                all_credentials=every,
                source=self.source,
            )
        )
        self.metrics.revocations.labels(source=bounded(self.source, REVOCATION_SOURCES)).inc()

    async def revoke_app(self, user: User, app: AuthorizedApp) -> list[str]:
        """Kill the app's grant families (their access and refresh tokens), its unredeemed codes, and forget its
        remembered consent, so the next authorization asks again."""
        now = self.clock.now()
        families = await self.storage.revoke_user_families(
            user.id, now=now, reason=APP_REVOKED, client_id=app.client_id, redirect_uri=app.installation
        )
        await self._announce(user.id, families=families)  # committed: announce before anything else can fail
        await self.storage.forget_consents(user.id, app.client_id, app.installation)
        self.audit.record(
            "app.revoked",
            actor=self.actor,
            client_id=app.client_id,
            reason=self.source,
            user_id=user.id,
            app_id=app.id,
            families=len(families),
        )
        return families

    async def revoke_all_apps(self, user: User) -> list[str]:
        """Sign out everywhere: every app's grants and codes, every remembered consent."""
        now = self.clock.now()
        families = await self.storage.revoke_user_families(user.id, now=now, reason=APP_REVOKED)
        await self._announce(user.id, families=families)  # committed: announce before anything else can fail
        for consent in await self.storage.list_consents(user.id):
            await self.storage.forget_consents(user.id, consent.client_id, consent.redirect_uri)
        self.audit.record(
            "sessions.revoked", actor=self.actor, reason=self.source, user_id=user.id, families=len(families)
        )
        return families

    async def revoke_key(self, user_id: str, key_id: str) -> bool:
        """Revoke one of the user's keys; False when it is not theirs, absent or already revoked."""
        if not await self.storage.revoke_api_key(key_id, now=self.clock.now(), user_id=user_id):
            return False
        await self._announce(user_id, keys=[key_id])
        self.audit.record("api_key.revoked", actor=self.actor, reason=self.source, user_id=user_id, key_id=key_id)
        return True

    async def disable_user(self, user: User) -> None:
        """Refuse the user's keys, tokens and sign-ins from now on (authentication checks the account)."""
        now = self.clock.now()
        await self.storage.set_disabled(user.id, now)
        await self.storage.revoke_user_browser_sessions(user.id, now=now)
        await self._announce(user.id, every=True)
        self.audit.record("user.disabled", actor=self.actor, reason=self.source, user_id=user.id)

    async def enable_user(self, user: User) -> None:
        await self.storage.set_disabled(user.id, None)
        self.audit.record("user.enabled", actor=self.actor, reason=self.source, user_id=user.id)

    async def password_changed(self, user: User, *, revoke_tokens: bool) -> None:
        """After a password change: end every browser session, and optionally every app's grants and every key."""
        now = self.clock.now()
        await self.storage.revoke_user_browser_sessions(user.id, now=now)
        if revoke_tokens:
            families = await self.storage.revoke_user_families(user.id, now=now, reason="password_changed")
            keys: list[str] = []
            try:
                for key in await self.storage.list_api_keys(user.id):
                    if key.revoked_at is None and await self.storage.revoke_api_key(key.id, now=now, user_id=user.id):
                        keys.append(key.id)
            finally:  # whatever committed is announced, even when a later write failed
                await self._announce(user.id, families=families, keys=keys, every=True)
        self.audit.record(
            "password.changed", actor=self.actor, user_id=user.id, tokens_revoked=str(revoke_tokens).lower()
        )
