"""Open event streams and their credentials: closed within a second of a revocation, an expiry or a shutdown.

Every event stream relayed to a client (``GET /mcp``, a ``POST /mcp`` answered with SSE, ``GET /mcp/sse``) is
registered with the principal and credential that opened it. A stream ends, with a final ``error`` event
and a clean end of the response (the upstream request is cancelled as its connection drops), when:

- a revocation naming its credential is announced and storage confirms the credential is no longer valid;
- its credential expires (known locally from the validation);
- the periodic read of the storage's revocation watermark (``Storage.revocation_epoch``, raised by the
  database with every revocation; read by ``gateway.credentials.watermark`` every
  ``revocation.stream_recheck_interval`` ≤ 0.5 s, this checker listens) finds it has moved and storage
  says the credential is no longer valid — this bounds a lost announcement to well under a second, while a quiet
  tick costs one small query per replica however many streams are open (a new stream is re-checked once on its
  first tick unless its validation was read under the current watermark);
- storage has been unable to confirm it for longer than the validation cache lifetime (one second);
- the server shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web

from gateway.clock import Clock
from gateway.credentials import MAX_CACHE_TTL, Authenticator, Presented, Principal
from gateway.errors import ServiceUnavailable
from gateway.proxy.http1 import Response
from gateway.proxy.upstream import EVENT_STREAM, EndStream, error_event
from gateway.revocation import Revocation

RECHECK_CONCURRENCY = 8

REVOKED = "credential revoked or expired"
UNAVAILABLE = "credential store unavailable"
SHUTTING_DOWN = "server shutting down"


@dataclass(eq=False)
class _Stream:
    principal: Principal
    credential: Presented
    upstream: Response
    confirmed_at: float
    expires_at: float | None = None
    checked: bool = False
    """Re-checked from storage at least once since it opened."""
    closed: bool = False

    def close(self, reason: str) -> None:
        """Wake the relay loop with ``EndStream``: it writes the final event and ends the response."""
        if not self.closed:
            self.closed = True
            self.upstream.content.set_exception(EndStream(error_event(reason)))


_NOT_A_STREAM: contextlib.AbstractAsyncContextManager[None] = contextlib.nullcontext()
"""What ``watch`` gives an answer that is not an event stream: nothing to register (reusable)."""


@dataclass
class OpenStreams:
    authn: Authenticator
    clock: Clock
    _streams: set[_Stream] = field(default_factory=set)
    _epoch: int | None = None
    _closing: str | None = None

    def __len__(self) -> int:
        return len(self._streams)

    def watch(
        self, request: web.Request, principal: Principal, upstream: Response
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """Register the response relayed inside the block when it is an event stream."""
        if upstream.content_type != EVENT_STREAM:
            return _NOT_A_STREAM
        return self._watch(request, principal, upstream)

    @contextlib.asynccontextmanager
    async def _watch(self, request: web.Request, principal: Principal, upstream: Response) -> AsyncIterator[None]:
        credential = self.authn.credential_of(request)
        cache = self.authn.cache
        stream = _Stream(principal, credential, upstream, self.clock.monotonic(), cache.expiry_of(credential.digest))
        # Validated under the watermark last read: only a move of it calls for a re-check.
        stream.checked = cache.under_current_watermark(credential.digest)
        self._streams.add(stream)
        if self._closing is not None:
            stream.close(self._closing)
        try:
            yield
        finally:
            self._streams.discard(stream)

    async def on_revocation(self, revocation: Revocation) -> None:
        """A ``RevocationBus`` listener: re-check (from storage) the streams whose credential it names."""
        named = [s for s in self._streams if s.principal.revoked_by(revocation)]
        if named:
            await self._recheck(named)

    def close_all(self, reason: str) -> None:
        """End every open stream, and every stream opened from now on (the server is shutting down)."""
        self._closing = reason
        for stream in list(self._streams):
            stream.close(reason)

    async def on_watermark(self, epoch: int | None) -> None:
        """A ``Watermark`` listener, after each periodic read (``epoch`` None: storage could not say): close
        expired streams; re-check new streams, and every stream when the revocation watermark moved."""
        now = self.clock.now()
        for stream in list(self._streams):
            if stream.expires_at is not None and now >= stream.expires_at:
                stream.close(REVOKED)
        if epoch is None:
            self._unconfirmed(list(self._streams))
            return
        if epoch != self._epoch:
            self._epoch = epoch  # read before re-checking: a revocation committed meanwhile moves it again
            await self._recheck(list(self._streams))
            return
        await self._recheck([s for s in self._streams if not s.checked])
        confirmed = self.clock.monotonic()
        for stream in self._streams:
            if stream.checked:
                stream.confirmed_at = confirmed

    def _unconfirmed(self, streams: list[_Stream]) -> None:
        """Storage cannot say: trust a stream no longer than the validation cache would."""
        for stream in streams:
            if self.clock.monotonic() - stream.confirmed_at > MAX_CACHE_TTL:
                stream.close(UNAVAILABLE)

    async def _recheck(self, streams: list[_Stream]) -> None:
        by_digest: dict[str, list[_Stream]] = {}
        for stream in streams:
            if not stream.closed:
                by_digest.setdefault(stream.credential.digest, []).append(stream)
        limit = asyncio.Semaphore(RECHECK_CONCURRENCY)

        async def check(group: list[_Stream]) -> None:
            async with limit:
                try:
                    valid = await self.authn.revalidate(group[0].credential)
                except ServiceUnavailable:
                    # Both the cache lifetime and the storage outage bound how long we keep trusting it; and
                    # until a re-check succeeds, every tick tries again (the watermark may not move again).
                    for stream in group:
                        stream.checked = False
                    self._unconfirmed(group)
                    return
            now, expires_at = self.clock.monotonic(), self.authn.cache.expiry_of(group[0].credential.digest)
            for stream in group:
                if valid:
                    stream.confirmed_at, stream.expires_at, stream.checked = now, expires_at, True
                else:
                    stream.close(REVOKED)

        await asyncio.gather(*(check(group) for group in by_digest.values()))
