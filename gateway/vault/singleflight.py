"""Refresh exactly once: one refresh per connection at a time, across every replica; concurrent callers wait and
reuse its result.

Why: a rotating provider (Okta, Microsoft, Atlassian, oidc-provider) that sees one refresh token twice revokes the
whole grant. So:

* In a replica, callers that saw the same row version share one refresh task (``asyncio``): 8 concurrent calls
  make one attempt per replica.
* Across replicas, the attempt runs under a Redis lock (``SET key token NX PX``; released by a compare-and-delete
  script, so an expired holder never frees a successor's lock). Whoever gets the lock first re-reads the row: when
  its ``version`` moved on, another replica already refreshed and its tokens are reused; only otherwise is the
  refresh token sent. Waiters poll for the lock every ``POLL_INTERVAL`` and then re-read the same way.
* Fencing: the row's ``version`` is the fencing token. The new tokens are written by compare-and-set on the version
  that was read under the lock, so a holder whose lock expired (a provider slower than ``LOCK_TTL``) cannot
  overwrite a newer refresh.

Without ``redis.url`` (one replica) the in-process lock alone serialises refreshes.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Final, Protocol

from gateway.redis_clients import RedisClient
from gateway.vault.refresh import RefreshRefused, RefreshUnavailable, TokenEndpoint
from gateway.vault.vault import Connection, ProviderTokens, Vault

LOCK_TTL: Final = 30.0
"""Seconds a refresh lock lives: above the token endpoint's timeout (10 s), so a live holder keeps it."""
LOCK_WAIT: Final = LOCK_TTL + 5.0
POLL_INTERVAL: Final = 0.02

# KEYS[1] the lock; ARGV[1] the holder's token. Deletes the lock only while this holder still owns it.
RELEASE_SCRIPT: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LockTimeout(Exception):
    """Another replica held the refresh lock for too long."""


class RefreshLock(Protocol):
    def hold(self, key: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Held by one caller (in every replica sharing the lock) at a time; ``LockTimeout`` after ``LOCK_WAIT``."""
        ...


class LocalLock:
    """One replica: an ``asyncio.Lock`` per key."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and self._locks.get(key) is lock:
                del self._locks[key]


class RedisLock:
    """Every replica: ``SET NX PX`` with a random holder token, compare-and-delete on release."""

    def __init__(self, redis: RedisClient, prefix: str, *, monotonic: Callable[[], float]) -> None:
        self._redis = redis
        self._prefix = prefix
        self._monotonic = monotonic
        self._local = LocalLock()

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        name = f"{self._prefix}:{key}"
        token = secrets.token_hex(16)
        async with self._local.hold(key):
            deadline = self._monotonic() + LOCK_WAIT
            while not await self._redis.set(name, token, nx=True, px=int(LOCK_TTL * 1000)):
                if self._monotonic() > deadline:
                    raise LockTimeout("the refresh lock stayed held")
                await asyncio.sleep(POLL_INTERVAL)
            try:
                yield
            finally:
                await self._redis.eval(RELEASE_SCRIPT, 1, name, token)


class RefreshCoordinator:
    """``fresh(connection)``: the connection with a usable access token (refreshed at most once per version), or
    a broken connection (the provider refused the refresh token); ``RefreshUnavailable`` for transient failures."""

    def __init__(
        self,
        vault: Vault,
        endpoints: Callable[[str], TokenEndpoint],
        lock: RefreshLock,
        now: Callable[[], float],
        *,
        on_refresh: Callable[[str, str, str], None] | None = None,
    ) -> None:
        """``endpoints(service)``: the token endpoint of the service's provider. ``on_refresh(user_id, service,
        outcome)`` hears ``ok``, ``refused`` or ``failed`` (metrics, audit)."""
        self._vault = vault
        self._endpoints = endpoints
        self._lock = lock
        self._now = now
        self._on_refresh = on_refresh
        self._inflight: dict[tuple[str, str, int], asyncio.Future[Connection]] = {}

    async def fresh(self, seen: Connection) -> Connection:
        key = (seen.user_id, seen.service, seen.version)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._refresh(seen))
            self._inflight[key] = task
            task.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(task)

    async def _refresh(self, seen: Connection) -> Connection:
        async with self._lock.hold(f"{{{seen.user_id}}}:{seen.service}"):
            current = await self._vault.connection(seen.user_id, seen.service)
            if current is None or current.version != seen.version or current.broken:
                return current or seen  # refreshed (or broken, or disconnected) meanwhile: reuse that
            if current.tokens.refresh_token is None:
                await self._vault.mark_broken(current)
                return await self._reread(current)
            try:
                response = await self._endpoints(current.service).refresh(current.tokens.refresh_token)
                tokens = ProviderTokens.from_response(response, self._now(), previous=current.tokens)
            except RefreshRefused:
                self._report(current, "refused")
                await self._vault.mark_broken(current)
                return await self._reread(current)
            except (RefreshUnavailable, ValueError) as exc:
                self._report(current, "failed")
                raise RefreshUnavailable(str(exc) if isinstance(exc, RefreshUnavailable) else "bad answer") from exc
            self._report(current, "ok")
            await self._vault.store_refreshed(current, tokens)
            return await self._reread(current)

    async def _reread(self, current: Connection) -> Connection:
        return await self._vault.connection(current.user_id, current.service) or current

    def _report(self, connection: Connection, outcome: str) -> None:
        if self._on_refresh is not None:
            self._on_refresh(connection.user_id, connection.service, outcome)
