"""The validation cache: a credential's validation reused for at most ``ttl`` (≤ 1 s), or longer while the revocation
watermark stays put, so a revocation made anywhere is refused within a second.

Entries are keyed by the credential's digest and indexed by credential id and account id, so a revocation
announcement drops exactly the entries it names. Each entry remembers the watermark observed *before* it was read
from storage: a revocation committed meanwhile moves the watermark past it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.credentials.principal import Refusal, Verified
from gateway.credentials.watermark import Watermark
from gateway.revocation import Revocation

MAX_CACHE_TTL = 1.0
DEFAULT_CACHE_TTL = 0.8
"""Below the one-second promise, leaving room for the reload query and the request in flight."""
MAX_ENTRY_AGE = 60.0
"""How long a validation is reused while the revocation watermark stays put (a plan change shows within this)."""
DEFAULT_CACHE_SIZE = 10_000

Load = Callable[[], Awaitable[Verified | Refusal]]


@dataclass(frozen=True, slots=True)
class _Entry:
    verified: Verified
    fetched_at: float
    epoch: int | None
    """The revocation watermark observed before this validation was read from storage."""


class ValidationCache:
    def __init__(
        self, clock: Clock, watermark: Watermark, *, ttl: float = DEFAULT_CACHE_TTL, size: int = DEFAULT_CACHE_SIZE
    ) -> None:
        self._clock = clock
        self._watermark = watermark
        self._ttl = min(ttl, MAX_CACHE_TTL)
        self._size = size
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._by_owner: dict[str, set[str]] = {}
        """Cached digests by credential id and by account id, so a revocation finds its entries directly."""

    def __len__(self) -> int:
        return len(self._entries)

    def fresh(self, digest: str) -> Verified | None:
        """The cached validation of ``digest`` while it may be reused (None: it must be loaded). No await: a busy
        credential costs one dictionary lookup and a clock read."""
        entry = self._entries.get(digest)
        if entry is not None and self._fresh(entry):
            return entry.verified
        return None

    async def validation(self, digest: str, load: Load) -> Verified | Refusal:
        """The cached validation of ``digest`` while fresh; otherwise ``load()`` it, remembering a success and
        forgetting the digest on a refusal. Storage errors raised by ``load`` propagate."""
        return self.fresh(digest) or await self.reload(digest, load)

    async def reload(self, digest: str, load: Load) -> Verified | Refusal:
        """``load()`` the validation now, bypassing and refreshing the cache."""
        epoch, fetched_at = self._watermark.epoch, self._clock.monotonic()
        judged = await load()
        if isinstance(judged, Refusal):
            self.drop(digest)
        else:
            self._remember(digest, _Entry(judged, fetched_at, epoch))
        return judged

    def _fresh(self, entry: _Entry) -> bool:
        """Reusable: read less than the cache lifetime ago, or read under the current watermark, which was seen
        unchanged less than the cache lifetime ago (so a revocation is still refused within a second)."""
        age = self._clock.monotonic() - entry.fetched_at
        if age < self._ttl:
            return True
        return age < MAX_ENTRY_AGE and self._watermark.seen_unchanged(entry.epoch, within=self._ttl)

    def under_current_watermark(self, digest: str) -> bool:
        """The cached validation of ``digest`` was read under the revocation watermark last observed: a
        revocation since then would move the watermark, so nothing needs re-reading until it does."""
        entry = self._entries.get(digest)
        return entry is not None and entry.epoch is not None and entry.epoch == self._watermark.epoch

    def expiry_of(self, digest: str) -> float | None:
        """When the cached credential ``digest`` expires (wall clock; None: never, or not cached)."""
        entry = self._entries.get(digest)
        return entry.verified.expires_at if entry is not None else None

    def _remember(self, digest: str, entry: _Entry) -> None:
        self.drop(digest)
        self._entries[digest] = entry
        for owner in self._owners(entry):
            self._by_owner.setdefault(owner, set()).add(digest)
        while len(self._entries) > self._size:
            self.drop(next(iter(self._entries)))

    def drop(self, digest: str) -> None:
        entry = self._entries.pop(digest, None)
        if entry is None:
            return
        for owner in self._owners(entry):
            digests = self._by_owner.get(owner)
            if digests is not None:
                digests.discard(digest)
                if not digests:
                    del self._by_owner[owner]

    def drop_revoked(self, revocation: Revocation) -> None:
        """Drop every cached validation ``revocation`` names (a ``RevocationBus`` listener)."""
        owners = [*revocation.family_ids, *revocation.api_key_ids]
        if revocation.all_credentials:
            owners.append(revocation.account_id)
        for owner in owners:
            for digest in list(self._by_owner.get(owner, ())):
                if self._entries[digest].verified.principal.revoked_by(revocation):
                    self.drop(digest)

    def flush(self) -> None:
        """Drop every cached validation (announcements may have been lost)."""
        self._entries.clear()
        self._by_owner.clear()

    @staticmethod
    def _owners(entry: _Entry) -> tuple[str, str]:
        principal = entry.verified.principal
        return principal.credential_id, principal.user_id
