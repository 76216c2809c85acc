"""Reading the flight recorder for people: a signed-in person's own attempts (the dashboard) and lines for the
command line (``mcp-gateway clients trace``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gateway.flight.recorder import FlightRecorder
from gateway.flight.steps import Record

ADDRESS_WINDOW = 3600.0
"""How far back a person's page shows steps from their address that no client or account was known for yet."""


async def attempts_for(recorder: FlightRecorder, *, account_id: str, address: str, now: float) -> list[Record]:
    """What a signed-in person sees: their account's steps, plus this address's steps that named no client or
    account yet (discovery at a wrong path, a first request without a credential) from the last hour."""
    own = await recorder.account_trail(account_id)
    nearby = [
        r
        for r in await recorder.address_trail(address)
        if r.account_id is None and r.client_id is None and r.at >= now - ADDRESS_WINDOW
    ]
    return sorted([*own, *nearby], key=lambda r: r.at, reverse=True)[: recorder.ring_size]


def render_lines(records: list[Record]) -> str:
    """The command line's view: one line per step, and the advice under each failure."""
    if not records:
        return "no recent steps recorded for this client"
    lines = []
    for r in reversed(records):
        when = datetime.fromtimestamp(r.at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        times = f" x{r.count}" if r.count > 1 else ""
        who = f" account {r.account_id}" if r.account_id else ""
        lines.append(f"{when}  {r.step:<12} {r.outcome:<6} {r.reason}{times}{who}")
        if r.detail:
            lines.append(f"{'':22}{r.detail}")
        if r.advice:
            lines.append(f"{'':22}→ {r.advice}")
    return "\n".join(lines)


def json_rows(records: list[Record]) -> list[dict[str, Any]]:
    return [r.as_json() for r in records]
