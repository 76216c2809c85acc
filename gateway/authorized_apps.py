"""Authorized Apps: what a user has approved, one row per app, built from remembered consents and grants.

An app is a client, and for a Client ID Metadata Document (an ``https`` client id shared by every copy of the
application) each installation, told apart by its redirect URI. Its id is opaque and derived from the user's
own id, so it means nothing in another account (a foreign id is simply not found: 404).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.oauth.redirect_uris import redirect_receiver
from gateway.storage.oauth import ConsentStore, GrantStore

NameLookup = Callable[[str], Awaitable[str | None]]
"""The display name of a client id, or None when unknown."""


def is_metadata_document(client_id: str) -> bool:
    return client_id.startswith("https://")


def app_id(user_id: str, client_id: str, installation: str | None) -> str:
    material = f"authorized-app\x00{user_id}\x00{client_id}\x00{installation or ''}"
    return hashlib.sha256(material.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class AuthorizedApp:
    id: str
    client_id: str
    installation: str | None
    """The redirect URI that identifies one installation of a metadata-document client; None otherwise."""
    name: str
    host: str | None
    """The metadata document's host (CIMD); None for a self-registered client, whose host means nothing."""
    receivers: tuple[str, ...]
    """What receives its codes, in words (``redirect_receiver``: the same words as the consent page)."""
    first_approved: float
    last_used: float | None
    scopes: tuple[str, ...]
    live_grants: int


@dataclass
class _Row:
    client_id: str
    installation: str | None
    redirects: set[str]
    first: float
    last_used: float | None
    scopes: set[str]
    grants: int


async def authorized_apps(
    user_id: str, *, consents: ConsentStore, grants: GrantStore, name_of: NameLookup | None = None
) -> list[AuthorizedApp]:
    """The user's apps, most recently approved first. An app shows while it has a remembered consent or a live
    grant; revoking it removes both."""
    rows: dict[tuple[str, str | None], _Row] = {}

    def row(client_id: str, redirect_uri: str, at: float) -> _Row:
        installation = redirect_uri if is_metadata_document(client_id) else None
        key = (client_id, installation)
        if key not in rows:
            rows[key] = _Row(client_id, installation, set(), at, None, set(), 0)
        found = rows[key]
        found.redirects.add(redirect_uri)
        found.first = min(found.first, at)
        return found

    for consent in await consents.list_consents(user_id):
        row(consent.client_id, consent.redirect_uri, consent.created_at).scopes.update(consent.scope.split())
    for family in await grants.list_families(user_id):
        found = row(family.client_id, family.redirect_uri, family.created_at)
        found.grants += 1
        found.scopes.update(family.scope.split())
        used = family.last_used_at or family.created_at
        found.last_used = max(found.last_used or 0.0, used)
    apps = []
    for (client_id, installation), found in rows.items():
        name = (await name_of(client_id) if name_of is not None else None) or client_id
        receivers = tuple(sorted({str(redirect_receiver(uri)) for uri in found.redirects}))
        host = urlsplit(client_id).netloc if is_metadata_document(client_id) else None
        apps.append(
            AuthorizedApp(
                id=app_id(user_id, client_id, installation),
                client_id=client_id,
                installation=installation,
                name=name,
                host=host,
                receivers=receivers,
                first_approved=found.first,
                last_used=found.last_used,
                scopes=tuple(sorted(found.scopes - {"offline_access"})),
                live_grants=found.grants,
            )
        )
    return sorted(apps, key=lambda app: (-app.first_approved, app.id))


async def find_app(user_id: str, wanted: str, *, consents: ConsentStore, grants: GrantStore) -> AuthorizedApp | None:
    """The user's app with this opaque id, or None (also for another user's app id)."""
    for app in await authorized_apps(user_id, consents=consents, grants=grants):
        if app.id == wanted:
            return app
    return None
