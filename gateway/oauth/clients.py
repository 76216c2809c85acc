"""Client resolution for the authorization and token endpoints: one view of a client, whether it registered
dynamically (RFC 7591) or identifies itself with a Client ID Metadata Document URL
(draft-ietf-oauth-client-id-metadata-document).

``client_id`` values starting with ``https://`` are metadata document URLs (the gateway never issues such
ids, RFC 7591 §3.2.1 / CIMD §3); everything else is looked up among registered clients.

State it sets up (``setup_clients``): ``CLIENT_RESOLVER`` and, when CIMD is enabled, ``CIMD_FETCHER``.
It uses ``CLIENTS`` when set before startup, else ``gateway.appkeys.STORAGE``.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from aiohttp import web

from gateway.appkeys import CLOCK, CONFIG, STORAGE
from gateway.oauth.cimd import CimdError, CimdFetcher, Resolver, is_cimd_client_id
from gateway.oauth.errors import ServiceUnavailable
from gateway.oauth.registration import CLIENTS
from gateway.security_events import client_registered
from gateway.storage.base import StorageUnavailable
from gateway.storage.oauth import ClientStore

MAX_CLIENT_ID_LENGTH = 255
"""Registered ids are short; longer non-URL ids are unknown without a database round trip."""

ClientKind = Literal["dcr", "cimd"]


@dataclass(frozen=True, slots=True)
class RegisteredClient:
    client_id: str
    client_name: str | None
    """Self-asserted: shown escaped, next to the redirect host (and ``host`` for CIMD)."""
    redirect_uris: tuple[str, ...]
    kind: ClientKind
    verified: bool
    """True when the client's identity is a URL the gateway fetched over verified TLS (CIMD); False for DCR."""
    host: str | None
    """The metadata document URL's host (CIMD), shown on the consent page; None for DCR."""
    grant_types: tuple[str, ...]
    scope: str | None


class ClientResolver:
    def __init__(self, store: ClientStore, cimd: CimdFetcher | None) -> None:
        self._store = store
        self._cimd = cimd

    async def resolve(self, client_id: str, *, refresh: bool = False, network: bool = True) -> RegisteredClient | None:
        """The client, or None when unknown (or a metadata URL while CIMD is disabled).

        Raises ``CimdError`` when a metadata document URL is malformed or its document cannot be fetched or
        is invalid (the authorize page says so), and ``ServiceUnavailable`` when storage is down. ``refresh``
        re-fetches a metadata document even when cached (a cached copy a flow no longer matches); ``network``
        False serves a document's cached copy only (``CimdFetcher.fetch``)."""
        if client_id.startswith("https://"):
            return await self._from_document(client_id, refresh=refresh, network=network)
        if not client_id or len(client_id) > MAX_CLIENT_ID_LENGTH:
            return None
        try:
            row = await self._store.get_client(client_id)
        except StorageUnavailable as exc:
            raise ServiceUnavailable("Authorization service unavailable, retry shortly") from exc
        if row is None:
            return None
        return RegisteredClient(
            client_id=row.client_id,
            client_name=row.client_name,
            redirect_uris=row.redirect_uris,
            kind="dcr",
            verified=False,
            host=None,
            grant_types=row.grant_types,
            scope=row.scope,
        )

    def would_fetch(self, client_id: str, *, refresh: bool = False) -> bool:
        """True when ``resolve`` would fetch a metadata document (not cached, or ``refresh``)."""
        if self._cimd is None or not client_id.startswith("https://"):
            return False
        return not self._cimd.cached(client_id, refresh=refresh)

    def has_copy(self, client_id: str) -> bool:
        """True when a metadata document's cached copy (fresh or kept past expiry) can serve without a fetch."""
        return self._cimd is not None and self._cimd.has_copy(client_id)

    async def _from_document(self, client_id: str, *, refresh: bool, network: bool) -> RegisteredClient | None:
        if self._cimd is None:
            return None
        if not is_cimd_client_id(client_id):
            raise CimdError("client_id is not a valid metadata document URL")
        metadata = await self._cimd.fetch(client_id, refresh=refresh, network=network)
        return RegisteredClient(
            client_id=metadata.client_id,
            client_name=metadata.client_name,
            redirect_uris=metadata.redirect_uris,
            kind="cimd",
            verified=True,
            host=urlsplit(client_id).hostname,
            grant_types=metadata.grant_types,
            scope=metadata.scope,
        )


CLIENT_RESOLVER = web.AppKey("oauth_client_resolver", ClientResolver)
CIMD_FETCHER = web.AppKey("oauth_cimd_fetcher", CimdFetcher)


def setup_clients(
    app: web.Application, *, resolver: Resolver | None = None, ssl_context: ssl.SSLContext | None = None
) -> None:
    """Create the ``ClientResolver`` (and its ``CimdFetcher``, closed at cleanup) when the app starts.

    ``resolver`` and ``ssl_context`` replace the fetcher's DNS lookup and trust store (tests); a
    ``CIMD_FETCHER`` set before startup is used as it is and not closed."""

    @contextlib.asynccontextmanager
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG]
        if CLIENTS not in app:
            app[CLIENTS] = app[STORAGE]
        fetcher: CimdFetcher | None = None
        owned = False
        if config.oauth.cimd.enabled:
            if CIMD_FETCHER in app:
                fetcher = app[CIMD_FETCHER]
            else:
                fetcher = CimdFetcher(
                    config.oauth.cimd,
                    clock=app[CLOCK],
                    resolver=resolver,
                    ssl_context=ssl_context,
                    private_use_schemes=config.oauth.registration.private_use_schemes,
                    on_fetched=lambda client_id: client_registered(app, kind="cimd", client_id=client_id),
                )
                app[CIMD_FETCHER] = fetcher
                owned = True
        app[CLIENT_RESOLVER] = ClientResolver(app[CLIENTS], fetcher)
        try:
            yield
        finally:
            if owned and fetcher is not None:
                await fetcher.close()

    app.cleanup_ctx.append(ctx)
