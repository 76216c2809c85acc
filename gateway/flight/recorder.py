"""The flight recorder: the recent steps of every client's and every person's attempts to connect.

Handlers call ``record`` (no I/O: a dict update), and a background loop writes what gathered to the shared trail
(Redis when configured, the database otherwise) every ``FLUSH_INTERVAL``. Identical steps within one flush are
kept once, with a count, so a client retrying in a loop fills one line, not the ring. A step is filed under its
client and its account, or, when neither is known yet (discovery, a bad first request), under the caller's
address, so a person can see their own attempts that never got as far as an app.

Budgets, so that strangers cannot flood the trail: at most ``MAX_PENDING`` distinct steps wait for a flush (the
rest are dropped and counted), and at most ``anonymous_per_minute`` steps a minute are filed by address alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Final, Protocol

from gateway.background import background
from gateway.clock import Clock
from gateway.flight.steps import REASONS, STEPS, Outcome, Record, Step, clean
from gateway.metrics import Metrics, bounded

log = logging.getLogger("gateway.flight")

FLUSH_INTERVAL: Final = 0.5
MAX_PENDING: Final = 1000
SEEN_CREDENTIALS: Final = 100_000
STEP_SET: Final = frozenset(STEPS)
CLIENT, ACCOUNT, ADDRESS = "c:", "a:", "i:"


class TrailBackend(Protocol):
    async def append(self, entries: Sequence[tuple[str, Record]]) -> None:
        """File each record under its subject (``c:<client id>``, ``a:<account id>`` or ``i:<address>``), keeping
        at most the ring size per subject and nothing older than the retention."""
        ...

    async def read(self, subject: str, *, limit: int) -> list[Record]:
        """The newest ``limit`` records of a subject, newest first; empty when none."""
        ...


class FlightRecorder:
    def __init__(
        self,
        backend: TrailBackend,
        clock: Clock,
        *,
        ring_size: int = 50,
        anonymous_per_minute: int = 600,
        enabled: bool = True,
        metrics: Metrics | None = None,
    ) -> None:
        self.backend = backend
        self.clock = clock
        self.ring_size = ring_size
        self.anonymous_per_minute = anonymous_per_minute
        self.enabled = enabled
        self.metrics = metrics
        self.dropped = 0
        self._pending: dict[tuple[object, ...], Record] = {}
        self._subjects: dict[tuple[object, ...], tuple[str, ...]] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._anonymous_minute = -1
        self._anonymous_used = 0

    def record(
        self,
        step: Step,
        outcome: Outcome,
        reason: str,
        *,
        detail: str = "",
        client_id: str | None = None,
        account_id: str | None = None,
        address: str | None = None,
    ) -> None:
        """Note one step; never raises, never waits."""
        if not self.enabled:
            return
        if self.metrics is not None:
            labels = {"step": bounded(step, STEP_SET), "outcome": outcome, "reason": bounded(reason, REASONS)}
            self.metrics.connection_steps.labels(**labels).inc()
        subjects = tuple(s for s in (client_id and CLIENT + client_id, account_id and ACCOUNT + account_id) if s) or (
            (ADDRESS + address,) if address else ()
        )
        if not subjects or (subjects[0].startswith(ADDRESS) and not self._anonymous_allowed()):
            return
        detail = clean(detail)
        key = (step, outcome, reason, detail, client_id, account_id, subjects)
        now = self.clock.now()
        known = self._pending.get(key)
        if known is not None:
            self._pending[key] = replace(known, at=now, count=known.count + 1)
            return
        if len(self._pending) >= MAX_PENDING:
            self.dropped += 1
            return
        self._pending[key] = Record(
            at=now,
            step=step,
            outcome=outcome,
            reason=clean(reason, 64),
            detail=detail,
            client_id=clean(client_id, 512) if client_id else None,
            account_id=account_id,
        )
        self._subjects[key] = subjects

    def first_seen(self, credential_id: str) -> bool:
        """True the first time this replica sees a credential (among the last ``SEEN_CREDENTIALS``)."""
        if credential_id in self._seen:
            return False
        self._seen[credential_id] = None
        if len(self._seen) > SEEN_CREDENTIALS:
            self._seen.popitem(last=False)
        return True

    def _anonymous_allowed(self) -> bool:
        minute = int(self.clock.now() // 60)
        if minute != self._anonymous_minute:
            self._anonymous_minute, self._anonymous_used = minute, 0
        self._anonymous_used += 1
        return self._anonymous_used <= self.anonymous_per_minute

    async def flush(self) -> None:
        """Write what gathered; on a failure the steps are dropped (the trail is a diagnostic, not a ledger)."""
        if not self._pending:
            return
        pending, subjects = self._pending, self._subjects
        self._pending, self._subjects = {}, {}
        entries = [(subject, record) for key, record in pending.items() for subject in subjects[key]]
        try:
            await self.backend.append(entries)
        except Exception as exc:  # any backend failure: the requests it describes were served regardless
            log.warning("flight recorder could not write %d steps: %s", len(entries), type(exc).__name__)

    async def trail(self, subject: str, *, limit: int | None = None) -> list[Record]:
        """A subject's steps, newest first, including those of this replica not yet flushed."""
        limit = limit or self.ring_size
        local = [record for key, record in self._pending.items() if subject in self._subjects[key]]
        stored = await self.backend.read(subject, limit=limit)
        return sorted([*local, *stored], key=lambda r: r.at, reverse=True)[:limit]

    async def client_trail(self, client_id: str) -> list[Record]:
        return await self.trail(CLIENT + client_id)

    async def account_trail(self, account_id: str) -> list[Record]:
        return await self.trail(ACCOUNT + account_id)

    async def address_trail(self, address: str) -> list[Record]:
        return await self.trail(ADDRESS + address)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            await self.flush()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        try:
            async with background(self._run(), name="flight recorder"):
                yield
        finally:
            await self.flush()
