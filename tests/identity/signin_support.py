"""A gateway with the identity provider ``corp`` (the real oidc-provider) configured, for the sign-in tests."""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import AsyncIterator, Mapping
from typing import Any

from gateway.storage import Storage
from tests.support.gateway import UNUSED_UPSTREAM, GatewayHandle, running_gateway
from tests.support.oauth_browser import Browser, Page, Redirect
from tests.support.oidc import OidcAccount, OidcClient, OidcProvider, run_oidc_provider, sign_in

DISPLAY_NAME = "Corp SSO"
ACCOUNTS = {
    "alice": OidcAccount("alice@example.com", True, "Alice"),
    "mallory": OidcAccount("alice@example.com", False, "Mallory"),
    "carol": OidcAccount("carol@corp.example", True, "Carol"),
}
_BUTTON = re.compile(r'<a class="button" href="([^"]+)" data-provider="corp">Continue with ' + DISPLAY_NAME)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def gateway_with_provider(
    storage: Storage, *, accounts: Mapping[str, Any] | None = None, **overrides: Any
) -> AsyncIterator[tuple[GatewayHandle, OidcProvider]]:
    """The provider's port is chosen first (the gateway's config names its issuer), the gateway's second (the
    provider registers the gateway's callback)."""
    issuer = f"http://127.0.0.1:{_free_port()}"
    client = OidcClient()
    corp = {
        "display_name": DISPLAY_NAME,
        "issuer": issuer,
        "client_id": client.client_id,
        "client_secret": client.client_secret,
    }
    config = {"identity_providers": {"corp": corp}, "accounts": dict(accounts or {}), **overrides}
    async with running_gateway(storage=storage, upstream_url=UNUSED_UPSTREAM, overrides=config) as gateway:
        registered = OidcClient(redirect_uris=(gateway.url + "/auth/corp/callback",))
        async with run_oidc_provider(
            clients=[registered], accounts=ACCOUNTS, port=int(issuer.rsplit(":", 1)[1])
        ) as idp:
            assert idp.issuer == issuer
            yield gateway, idp


def continue_with(page: Page | Redirect) -> str:
    """The "Continue with Corp SSO" link of a sign-in page."""
    assert isinstance(page, Page), page
    found = _BUTTON.search(page.text)
    assert found is not None, page.text[:2000]
    return found.group(1).replace("&amp;", "&")


async def through_provider(browser: Browser, idp: OidcProvider, start: str, login: str) -> Page | Redirect:
    """Open the gateway's start link, sign in at the provider as ``login``, and follow the callback."""
    to_provider = await browser.open(browser.origin + start)
    assert isinstance(to_provider, Redirect), to_provider
    assert to_provider.location.startswith(idp.issuer + "/auth?"), to_provider.location
    back = await sign_in(idp, to_provider.location, login=login)
    assert back.startswith(browser.origin + "/auth/corp/callback?"), back
    return await browser.open(back)
