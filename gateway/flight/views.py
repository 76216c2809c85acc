"""The flight recorder in the admin API: any client's or any account's recent connection steps."""

from __future__ import annotations

from aiohttp import web

from gateway.admin.api import require_admin
from gateway.appkeys import STORAGE
from gateway.errors import NO_STORE, InvalidRequest, NotFound, ServiceUnavailable
from gateway.flight.recorder import FlightRecorder
from gateway.flight.setup import FLIGHT


def _recorder(request: web.Request) -> FlightRecorder:
    recorder = request.app.get(FLIGHT)
    if recorder is None:
        raise ServiceUnavailable("The flight recorder is not running")
    return recorder


async def client_trace(request: web.Request) -> web.Response:
    """``GET /admin/api/clients/trace?client_id=…``: a client's recent steps in every account."""
    await require_admin(request)
    client_id = request.query.get("client_id", "")
    if not client_id:
        raise InvalidRequest("client_id is required")
    records = await _recorder(request).client_trail(client_id)
    return web.json_response({"client_id": client_id, "steps": [r.as_json() for r in records]}, headers=NO_STORE)


async def user_trace(request: web.Request) -> web.Response:
    """``GET /admin/api/users/{user_id}/trace``: one account's recent steps, with every client."""
    await require_admin(request)
    user_id = request.match_info["user_id"]
    if await request.app[STORAGE].get_user(user_id) is None:
        raise NotFound("No such user")
    records = await _recorder(request).account_trail(user_id)
    return web.json_response({"user_id": user_id, "steps": [r.as_json() for r in records]}, headers=NO_STORE)
