"""The dashboard's "Connected services" section: one line per configured service, with what the vault holds for
the signed-in user (nothing secret: provider account, scopes, dates and status are stored in clear)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from gateway.vault.setup import VAULT
from gateway.vault.vault import BROKEN


@dataclass(frozen=True)
class ServiceLine:
    name: str
    status: str
    """``not connected``, ``connected`` or ``reconnect required``."""
    account: str | None = None
    scopes: str = ""
    connected_at: float | None = None
    last_used_at: float | None = None

    @property
    def connected(self) -> bool:
        return self.status != "not connected"


async def service_lines(app: web.Application, user_id: str) -> list[ServiceLine]:
    services = app.get(VAULT)
    if services is None:
        return []
    rows = {row.service: row for row in await services.vault.list_connections(user_id)}
    lines = []
    for service in services.services.services:
        row = rows.get(service.name)
        if row is None:
            lines.append(ServiceLine(service.name, "not connected"))
            continue
        lines.append(
            ServiceLine(
                service.name,
                "reconnect required" if row.status == BROKEN else "connected",
                row.provider_email or row.provider_account_id,
                row.scopes,
                row.created_at,
                row.last_used_at,
            )
        )
    return lines
