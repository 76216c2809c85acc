"""``mcp-gateway doctor``: check a deployment from outside (its public URL, as MCP clients see it) and from inside
(the upstream, the database and Redis, as the gateway sees them), and say what to change.

Each check yields ``Finding``s; a ``fail`` is something that stops clients from connecting or exposes the
deployment, a ``warn`` something that works but is risky. The command exits 1 when anything failed (and with
``--strict`` when anything warned), so it can gate a rollout in CI.
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from gateway.clock import Clock
from gateway.config import GatewayConfig
from gateway.doctor.base import Finding
from gateway.doctor.inside import InsideChecks
from gateway.doctor.outside import OutsideChecks

__all__ = ["Doctor", "Finding", "diagnose", "exit_status", "render"]


class Doctor(OutsideChecks, InsideChecks):
    """Every check of one deployment, in the order a person would look."""

    async def run(self) -> list[Finding]:
        self.check_public_url()
        reachable = await self.check_reachable()
        if reachable:
            await self.check_discovery()
            await self.check_metrics_exposure()
        await self.check_upstream()
        await self.check_storage()
        await self.check_redis()
        self.check_front_proxy()
        return self.findings


SYMBOLS = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def render(findings: list[Finding]) -> str:
    lines = []
    for finding in findings:
        lines.append(f"{SYMBOLS[finding.level]}  {finding.check}: {finding.message}")
        if finding.fix and finding.level != "ok":
            lines.append(f"      fix: {finding.fix}")
    failed = sum(f.level == "fail" for f in findings)
    warned = sum(f.level == "warn" for f in findings)
    lines.append(f"{failed} failed, {warned} warnings" if failed or warned else "everything looks right")
    return "\n".join(lines)


def exit_status(findings: list[Finding], *, strict: bool = False) -> int:
    bad = {"fail", "warn"} if strict else {"fail"}
    return 1 if any(f.level in bad for f in findings) else 0


async def diagnose(
    config: GatewayConfig,
    *,
    clock: Clock,
    session_factory: Callable[[], aiohttp.ClientSession] = aiohttp.ClientSession,
) -> list[Finding]:
    async with session_factory() as session:
        return await Doctor(config, session=session, clock=clock).run()
