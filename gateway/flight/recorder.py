"""The flight recorder: the recent steps of every client's and every person's attempts to connect.

Handlers call ``record`` (no I/O: a dict update), and a background loop writes what gathered to the shared trail
(Redis when configured, the database otherwise) every ``FLUSH_INTERVAL``. Identical steps within one flush are
kept once, with a count, so a client retrying in a loop fills one line, not the ring. A step is filed under its
client and its account. A failure of a caller who proved no account (no valid code, token, key or sign-in) is
"unproven": it goes to the client's separate ``u:`` ring, or, when no client is named (discovery, a wrong path),
to the caller's address, so a person can see their own attempts that never got as far as an app, and strangers
cannot push a client's real steps out of its ring.

Budgets, so that strangers cannot flood the trail: at most ``MAX_PENDING`` distinct steps wait for a flush (the
rest are dropped and counted); unproven steps are limited to ``anonymous_per_minute`` per address (ten addresses'
worth in all) and, within a flush, are one line per step and reason whatever text the caller chose; a 429 is
never a step.
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
from gateway.flight.steps import REASONS, STEPS, Outcome, Record, Redactor, Step
from gateway.metrics import Metrics, bounded

log = logging.getLogger("gateway.flight")

FLUSH_INTERVAL: Final = 0.5
MAX_PENDING: Final = 1000
SEEN_CREDENTIALS: Final = 100_000
STEP_SET: Final = frozenset(STEPS)
CLIENT, ACCOUNT, ADDRESS, UNPROVEN = "c:", "a:", "i:", "u:"
MAX_CLIENT_ID: Final = 512
ANONYMOUS_ADDRESSES: Final = 10
"""All addresses together may file ten addresses' worth of anonymous steps a minute."""


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
        anonymous_per_minute: int = 60,
        enabled: bool = True,
        metrics: Metrics | None = None,
        api_key_prefix: str = "mgw",
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
        self._anonymous_by_address: dict[str, int] = {}
        self.redact = Redactor(api_key_prefix)

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
        anonymous = outcome == "failed" and account_id is None
        subjects = self._subjects_of(client_id, account_id, address, anonymous=anonymous)
        if not subjects or (anonymous and not self._anonymous_allowed(address)):
            return
        detail = self.redact(detail)
        # A caller proven to be nobody cannot make its steps distinct with text of its choosing (a redirect URI,
        # a path): one line per step and reason per flush, holding the latest detail.
        key = (step, outcome, reason, None if anonymous else detail, client_id, account_id, subjects)
        now = self.clock.now()
        known = self._pending.get(key)
        if known is not None:
            self._pending[key] = replace(known, at=now, count=known.count + 1, detail=detail)
            return
        if len(self._pending) >= MAX_PENDING:
            self.dropped += 1
            return
        self._pending[key] = Record(
            at=now,
            step=step,
            outcome=outcome,
            reason=self.redact(reason, 64),
            detail=detail,
            client_id=self.redact(client_id, MAX_CLIENT_ID) if client_id else None,
            account_id=account_id,
        )
        self._subjects[key] = subjects

    @staticmethod
    def _subjects_of(
        client_id: str | None, account_id: str | None, address: str | None, *, anonymous: bool
    ) -> tuple[str, ...]:
        """Where a step is filed. A failure of a caller who proved no account goes to the client's separate
        ``u:`` ring (or the address's, when no client is named), so strangers cannot push a client's real steps
        out of its ring."""
        if anonymous:
            if client_id:
                return (UNPROVEN + client_id[:MAX_CLIENT_ID],)
            return (ADDRESS + address,) if address else ()
        return tuple(
            s for s in (client_id and CLIENT + client_id[:MAX_CLIENT_ID], account_id and ACCOUNT + account_id) if s
        )

    def first_seen(self, credential_id: str) -> bool:
        """True the first time this replica sees a credential (among the last ``SEEN_CREDENTIALS``)."""
        if credential_id in self._seen:
            return False
        self._seen[credential_id] = None
        if len(self._seen) > SEEN_CREDENTIALS:
            self._seen.popitem(last=False)
        return True

    def _anonymous_allowed(self, address: str | None) -> bool:
        """At most ``anonymous_per_minute`` steps a minute from one address, and ten times that from all."""
        minute = int(self.clock.now() // 60)
        if minute != self._anonymous_minute:
            self._anonymous_minute, self._anonymous_used = minute, 0
            self._anonymous_by_address.clear()
        if self._anonymous_used >= ANONYMOUS_ADDRESSES * self.anonymous_per_minute:
            return False
        used = self._anonymous_by_address.get(address or "", 0)
        if used >= self.anonymous_per_minute:
            return False
        self._anonymous_by_address[address or ""] = used + 1
        self._anonymous_used += 1
        return True

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
        """The client's steps, and the failures of callers who proved no account (kept in a ring of their own)."""
        proven = await self.trail(CLIENT + client_id[:MAX_CLIENT_ID])
        unproven = await self.trail(UNPROVEN + client_id[:MAX_CLIENT_ID])
        return sorted([*proven, *unproven], key=lambda r: r.at, reverse=True)[: self.ring_size]

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
