"""The admin API's side of the app flow: ``POST /admin/api/keys/{key_id}/callbacks`` sets the callback URLs an
API key allows (``{"redirect_uris": [...], "tokens_in_url": false}``; an empty list takes the key out of the app
flow). ``tokens_in_url`` is risky (``TOKENS_IN_URL_RISK``) and off unless sent as ``true``."""

from __future__ import annotations

from aiohttp import web

from gateway.admin.api import _mutation
from gateway.appkeys import CLOCK, STORAGE
from gateway.audit import AUDIT
from gateway.errors import InvalidRequest, NotFound
from gateway.identity.app_callbacks import TOKENS_IN_URL_RISK, CallbackUrlError, key_app_for
from gateway.storage.app_flow import KeyApp


async def set_key_callbacks(request: web.Request) -> web.Response:
    actions, body = await _mutation(request)
    storage = request.app[STORAGE]
    key = await storage.get_api_key(request.match_info["key_id"])
    if key is None or not key.usable_at(request.app[CLOCK].now()):
        raise NotFound("No such active key")
    uris, tokens_in_url = body.get("redirect_uris", []), body.get("tokens_in_url", False)
    if not isinstance(uris, list) or not all(isinstance(u, str) for u in uris):
        raise InvalidRequest("redirect_uris is a list of URLs")
    if not isinstance(tokens_in_url, bool):
        raise InvalidRequest("tokens_in_url is true or false")
    try:
        key_app = key_app_for(key.id, uris, tokens_in_url=tokens_in_url) or KeyApp(key.id, ())
    except CallbackUrlError as exc:
        raise InvalidRequest(str(exc)) from exc
    await storage.set_key_app(key_app)
    request.app[AUDIT].record(
        "api_key.callbacks_set", actor=actions.actor, reason="admin", user_id=key.user_id, key_id=key.id
    )
    answer: dict[str, object] = {"key_id": key.id, "redirect_uris": list(key_app.redirect_uris)}
    answer["tokens_in_url"] = key_app.tokens_in_url
    if key_app.tokens_in_url:
        answer["warning"] = TOKENS_IN_URL_RISK
    return web.json_response(answer, headers={"Cache-Control": "no-store"})
