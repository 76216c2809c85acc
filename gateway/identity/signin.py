"""People sign in to the gateway with a configured identity provider (``identity_providers.NAME``).

``start`` sends the browser to the provider with what ``ProviderClient.begin`` made, keeping that server-side
(``identity_sign_ins``: keyed by the SHA-256 of ``state``, bound to the SHA-256 of the browser-binding cookie)
together with where the person continues (``return_to``: the dashboard, or the OAuth flow's pending request).
The provider sends the browser back to the one callback of the provider (``CALLBACK_PATH``, the URL to
register there); ``take`` takes the pending sign-in once (a replayed callback finds nothing), checks it is this
browser's, and ``complete`` lets ``ProviderClient.complete`` check the rest. Deciding the account is
``gateway.identity.linking``; the pages are ``gateway.identity.signin_web``.
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from gateway.appkeys import CLOCK, CONFIG, STORAGE
from gateway.clock import Clock
from gateway.identity.pending_seal import open_verifier, seal_verifier
from gateway.identity.provider_config import ProviderConfig
from gateway.identity.provider_http import ProviderError
from gateway.identity.providers import PENDING_TTL, PendingAuthorization, ProviderClient, ProviderIdentity
from gateway.secrets_hashing import secret_hash
from gateway.storage.identity_links import PendingSignIn, PendingSignInStore

CALLBACK_PATH = "/auth/{provider}/callback"
"""Where every provider sends the browser back (register ``<public_url>/auth/NAME/callback`` at the provider)."""
MAX_RETURN_TO = 200


def callback_url(public_url: str, provider: str) -> str:
    return public_url + CALLBACK_PATH.format(provider=provider)


@dataclass(frozen=True)
class ProviderSignIns:
    clients: Mapping[str, ProviderClient]
    store: PendingSignInStore
    clock: Clock
    public_url: str

    @property
    def providers(self) -> list[ProviderConfig]:
        """The configured providers, in configuration order (for the pages' buttons)."""
        return [client.config for client in self.clients.values()]

    def client(self, name: str) -> ProviderClient | None:
        return self.clients.get(name)

    async def start(self, client: ProviderClient, *, browser: str, return_to: str) -> str:
        """The provider's authorization URL for this browser; the sign-in is kept until the callback."""
        if len(return_to) > MAX_RETURN_TO:
            raise ValueError("return_to too long")
        url, pending = await client.begin(callback_url(self.public_url, client.config.name))
        await self.store.add_pending_sign_in(
            PendingSignIn(
                state_hash=secret_hash(pending.state),
                browser_hash=secret_hash(browser),
                provider=pending.provider,
                code_verifier=seal_verifier(pending.code_verifier, pending.state),
                nonce=pending.nonce,
                redirect_uri=pending.redirect_uri,
                return_to=return_to,
                created_at=pending.created_at,
            ),
            purge_before=self.clock.now() - PENDING_TTL,
        )
        return url

    async def take(self, client: ProviderClient, *, browser: str | None, state: str) -> PendingSignIn:
        """The pending sign-in this callback belongs to, taken once; raises ``ProviderError("invalid_state")`` for
        a callback this browser did not start (or not at this provider), or one already used."""
        stored = await self.store.take_pending_sign_in(secret_hash(state)) if 0 < len(state) <= 512 else None
        if (
            stored is None
            or browser is None
            or stored.provider != client.config.name
            or not hmac.compare_digest(stored.browser_hash, secret_hash(browser))
        ):
            raise ProviderError("invalid_state", "This sign-in was not started in this browser, or was already used.")
        return stored

    async def complete(
        self, client: ProviderClient, stored: PendingSignIn, params: Mapping[str, str]
    ) -> ProviderIdentity:
        """Who signed in (``ProviderClient.complete`` checks state, expiry, ``iss``, the code and the ID token)."""
        state = params.get("state", "")
        pending = PendingAuthorization(
            provider=stored.provider,
            state=state,
            code_verifier=open_verifier(stored.code_verifier, state),
            nonce=stored.nonce,
            redirect_uri=stored.redirect_uri,
            created_at=stored.created_at,
        )
        return await client.complete(pending, params)


PROVIDER_SIGN_INS = web.AppKey("provider_sign_ins", ProviderSignIns)


def setup_provider_sign_in(app: web.Application) -> None:
    """Register after the storage context; the routes are lines of ``gateway.routes``."""
    app.cleanup_ctx.append(_sign_in_ctx)


@contextlib.asynccontextmanager
async def _sign_in_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    async with aiohttp.ClientSession() as session:
        clients = {p.name: ProviderClient(p, session, app[CLOCK]) for p in config.identity_providers.providers}
        app[PROVIDER_SIGN_INS] = ProviderSignIns(clients, app[STORAGE], app[CLOCK], config.public_url)
        yield
