"""The MCP SDK's own OAuth client provider, driven by a test browser instead of a person."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from tests.support.oauth_browser import Browser

REDIRECT_URI = "http://127.0.0.1:33418/callback"


@dataclass
class MemoryTokenStorage:
    tokens: OAuthToken | None = None
    client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


@dataclass
class BrowserDrivenAuth:
    """redirect_handler + callback_handler pair that signs ``email`` in through ``browser``."""

    browser: Browser
    email: str
    authorization_urls: list[str] = field(default_factory=list)
    _pending: str | None = None

    async def redirect_handler(self, url: str) -> None:
        self.authorization_urls.append(url)
        self._pending = url

    async def callback_handler(self) -> AuthorizationCodeResult:
        assert self._pending is not None
        redirect = await self.browser.authorize(self._pending, self.email)
        params = redirect.params
        return AuthorizationCodeResult(code=params["code"], state=params.get("state"), iss=params.get("iss"))


def provider_for(
    mcp_url: str,
    auth: BrowserDrivenAuth,
    storage: MemoryTokenStorage,
    *,
    client_name: str = "Test MCP client",
    client_metadata_url: str | None = None,
    scope: str | None = None,
) -> OAuthClientProvider:
    metadata = OAuthClientMetadata(
        client_name=client_name,
        redirect_uris=[REDIRECT_URI],  # type: ignore[list-item]
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method="none",
        scope=scope,
    )
    return OAuthClientProvider(
        server_url=mcp_url,
        client_metadata=metadata,
        storage=storage,
        redirect_handler=auth.redirect_handler,
        callback_handler=auth.callback_handler,
        client_metadata_url=client_metadata_url,
    )


@asynccontextmanager
async def oauth_mcp_client(mcp_url: str, provider: OAuthClientProvider) -> AsyncIterator[Client]:
    async with httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(30.0, read=300.0)) as http:
        async with Client(streamable_http_client(mcp_url, http_client=http), mode="legacy", cache=None) as client:
            yield client
