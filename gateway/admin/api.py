"""The admin API (JSON), for administrators signed in to the dashboard: users, their apps and keys;
revoke by user, by client, by key; disable and enable users; create keys (with scopes).

Only an administrator's browser session is accepted: no session (or an expired one) is 401; another user's
session, or any API key or bearer token, is 403. Mutations are same-origin POSTs with a JSON body (a
cross-site form cannot send one), and each is recorded in the audit log as ``admin:<id>``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway import jsonsafe
from gateway.account_actions import AccountActions
from gateway.accounts import AccountError
from gateway.appkeys import CONFIG, STORAGE
from gateway.audit import AUDIT
from gateway.authorized_apps import AuthorizedApp, authorized_apps, find_app
from gateway.dashboard.context import DASHBOARD, actions_for
from gateway.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from gateway.policy.keys import UnknownKeyScope, key_scope
from gateway.storage.base import ApiKey, User
from gateway.web_pages import check_same_origin_post

PREFIX = "/admin/api"
ADMIN = "admin"


async def require_admin(request: web.Request) -> User:
    if "Authorization" in request.headers or "X-API-Key" in request.headers:
        raise Forbidden("The admin API accepts only an administrator's signed-in session, not keys or tokens")
    user = await request.app[DASHBOARD].logins.current_user(request)
    if user is None:
        raise Unauthorized("Sign in as an administrator")
    if user.role != ADMIN:
        raise Forbidden("This account is not an administrator")
    return user


async def _mutation(request: web.Request) -> tuple[AccountActions, dict[str, Any]]:
    admin = await require_admin(request)
    check_same_origin_post(request, request.app[DASHBOARD].public_origin)
    if request.content_type != "application/json":
        raise InvalidRequest("Send a JSON body (Content-Type: application/json)")
    raw = await request.read()  # at most limits.max_form_bytes (the route table's cap), else 413
    body = jsonsafe.loads(raw) if raw.strip() else {}
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object")
    return actions_for(request, f"admin:{admin.id}", "admin"), body


async def _user(request: web.Request) -> User:
    user = await request.app[STORAGE].get_user(request.match_info["user_id"])
    if user is None:
        raise NotFound("No such user")
    return user


def _user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "role": user.role,
        "plan": user.plan,
        "created_at": user.created_at,
        "disabled_at": user.disabled_at,
    }


def _app_json(app: AuthorizedApp) -> dict[str, Any]:
    return {
        "id": app.id,
        "client_id": app.client_id,
        "installation": app.installation,
        "name": app.name,
        "first_approved": app.first_approved,
        "last_used": app.last_used,
        "scopes": list(app.scopes),
        "live_grants": app.live_grants,
    }


def _key_json(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "display": f"{key.display_prefix}…{key.last_four}",
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
        "scopes": key.scope.split() if key.scope is not None else None,
    }


def _ok(body: dict[str, Any]) -> web.Response:
    return web.json_response(body, headers={"Cache-Control": "no-store"})


async def list_users(request: web.Request) -> web.Response:
    await require_admin(request)
    return _ok({"users": [_user_json(u) for u in await request.app[STORAGE].list_users()]})


async def show_user(request: web.Request) -> web.Response:
    await require_admin(request)
    user, storage = await _user(request), request.app[STORAGE]
    names = request.app[DASHBOARD].client_name
    apps = await authorized_apps(user.id, consents=storage, grants=storage, name_of=names)
    keys = await storage.list_api_keys(user.id)
    return _ok({"user": _user_json(user), "apps": [_app_json(a) for a in apps], "keys": [_key_json(k) for k in keys]})


async def disable_user(request: web.Request) -> web.Response:
    actions, _ = await _mutation(request)
    user = await _user(request)
    await actions.disable_user(user)
    return _ok({"disabled": user.id})


async def enable_user(request: web.Request) -> web.Response:
    actions, _ = await _mutation(request)
    user = await _user(request)
    await actions.enable_user(user)
    return _ok({"enabled": user.id})


async def revoke_user(request: web.Request) -> web.Response:
    """Everything the user's apps and keys hold."""
    actions, _ = await _mutation(request)
    user = await _user(request)
    families = await actions.revoke_all_apps(user)
    keys = [k.id for k in await request.app[STORAGE].list_api_keys(user.id) if k.revoked_at is None]
    revoked_keys = [k for k in keys if await actions.revoke_key(user.id, k)]
    return _ok({"families": len(families), "keys": len(revoked_keys)})


async def revoke_user_app(request: web.Request) -> web.Response:
    actions, _ = await _mutation(request)
    user, storage = await _user(request), request.app[STORAGE]
    app = await find_app(user.id, request.match_info["app_id"], consents=storage, grants=storage)
    if app is None:
        raise NotFound("No such app for this user")
    return _ok({"families": len(await actions.revoke_app(user, app))})


async def revoke_client(request: web.Request) -> web.Response:
    """One client's grants in every account (``{"client_id": ...}``)."""
    actions, body = await _mutation(request)
    client_id = body.get("client_id")
    if not isinstance(client_id, str) or not client_id:
        raise InvalidRequest("client_id is required")
    storage, families = request.app[STORAGE], 0
    for user_id in await storage.users_of_client(client_id):
        user = await storage.get_user(user_id)
        if user is None:
            continue
        for app in await authorized_apps(user.id, consents=storage, grants=storage):
            if app.client_id == client_id:
                families += len(await actions.revoke_app(user, app))
    return _ok({"families": families})


async def revoke_key(request: web.Request) -> web.Response:
    actions, _ = await _mutation(request)
    key = await request.app[STORAGE].get_api_key(request.match_info["key_id"])
    if key is None or not await actions.revoke_key(key.user_id, key.id):
        raise NotFound("No such active key")
    return _ok({"revoked": key.id})


async def create_key(request: web.Request) -> web.Response:
    """A key for the user (``{"name": ..., "scopes": [...], "expires_in_days": N}``); the secret is shown once.
    Without ``scopes`` the key may use everything, as before scopes existed."""
    actions, body = await _mutation(request)
    user = await _user(request)
    name, scopes, days = body.get("name"), body.get("scopes", []), body.get("expires_in_days")
    if not isinstance(name, str):
        raise InvalidRequest("name is required")
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise InvalidRequest("scopes is a list of scope names")
    if days is not None and (isinstance(days, bool) or not isinstance(days, int | float) or days <= 0):
        raise InvalidRequest("expires_in_days is a positive number")
    try:
        scope = key_scope(request.app[CONFIG].authorization, scopes)
        row, minted = await request.app[DASHBOARD].accounts.create_key(
            user, name=name, expires_in=days * 86400.0 if days is not None else None, scope=scope
        )
    except (UnknownKeyScope, AccountError) as exc:
        raise InvalidRequest(str(exc)) from exc
    request.app[AUDIT].record("api_key.created", actor=actions.actor, reason="admin", user_id=user.id, key_id=row.id)
    return _ok({"key": _key_json(row), "secret": minted.key})
