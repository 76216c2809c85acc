"""The same OAuth flow when the client identifies itself with a Client ID Metadata Document (https URL),
served by a local HTTPS server whose CA the gateway is configured to trust."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from gateway.storage import Storage
from tests.support.gateway import running_gateway
from tests.support.https_server import serve_metadata_document
from tests.support.oauth_browser import Browser
from tests.support.oauth_clients import (
    REDIRECT_URI,
    BrowserDrivenAuth,
    MemoryTokenStorage,
    oauth_mcp_client,
    provider_for,
)
from tests.support.upstream import UpstreamProcess

WAIT = 30.0


async def test_an_sdk_client_with_a_metadata_document_connects_without_registering(
    sqlite_storage: Storage, upstream: UpstreamProcess, tmp_path: Path
):
    async with serve_metadata_document(
        tmp_path,
        client_name="Metadata Document App",
        redirect_uris=[REDIRECT_URI],
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method="none",
    ) as served:
        client_id = served.client_id
        overrides = served.gateway_overrides
        async with running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url, overrides=overrides) as gw:
            await gw.new_user("lin@example.com")
            storage = MemoryTokenStorage()
            async with Browser(gw.url) as browser:
                auth = BrowserDrivenAuth(browser, "lin@example.com")
                provider = provider_for(gw.mcp_url, auth, storage, client_metadata_url=client_id)
                async with asyncio.timeout(WAIT), oauth_mcp_client(gw.mcp_url, provider) as client:
                    result = await client.call_tool("whoami", {})
                consent = next(page for page in browser.pages if 'action="/consent"' in page.text)
            assert await sqlite_storage.get_client(client_id) is None

    seen = json.loads(result.content[0].text)  # type: ignore[union-attr]
    assert seen["identity"]["x-gateway-client-id"] == client_id
    assert "Metadata Document App" in consent.text
    assert "Unverified application" not in consent.text
    assert "localhost" in consent.text
    assert "an app on this computer (port 33418)" in consent.text  # the redirect URI's receiver
