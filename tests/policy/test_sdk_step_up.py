"""The MCP SDK's OAuth client against a policy: a narrow token lists only what it may use, a forbidden call gets
the 403 ``insufficient_scope`` challenge, the SDK re-authorizes (one more consent, showing only what is new) and
the call then succeeds."""

from __future__ import annotations

import asyncio
import json

from gateway.authorized_apps import authorized_apps
from gateway.clock import ManualClock
from gateway.metrics import METRICS
from tests.gateway.test_oauth_end_to_end import form_post
from tests.policy.conftest import MATH_SENTENCE, READ_SENTENCE
from tests.support.gateway import GatewayHandle
from tests.support.oauth_browser import Browser
from tests.support.oauth_clients import BrowserDrivenAuth, MemoryTokenStorage, oauth_mcp_client, provider_for

WAIT = 30.0


async def test_a_narrow_token_lists_only_its_tools_and_steps_up_through_one_more_consent(
    policy_gateway: GatewayHandle, clock: ManualClock
):
    await policy_gateway.new_user("ada@example.com")
    storage = MemoryTokenStorage()
    async with Browser(policy_gateway.url) as browser:
        auth = BrowserDrivenAuth(browser, "ada@example.com")
        provider = provider_for(policy_gateway.mcp_url, auth, storage)
        async with asyncio.timeout(WAIT), oauth_mcp_client(policy_gateway.mcp_url, provider) as client:
            listed = await client.list_tools()
            first = storage.tokens
            assert first is not None
            echoed = await client.call_tool("echo", {"text": "hi"})
            added = await client.call_tool("add", {"a": 2, "b": 3})
        consents = [page for page in browser.pages if 'action="/consent"' in page.text]

    assert sorted(tool.name for tool in listed.tools) == ["echo", "whoami"]
    assert first.scope == "tools:read"
    assert "hi" in echoed.content[0].text  # type: ignore[union-attr]
    assert not added.is_error
    assert json.loads(added.content[0].text) == 5 or "5" in added.content[0].text  # type: ignore[union-attr]
    # Two authorizations, each with its own consent page: the second one asks only for what is new.
    assert len(auth.authorization_urls) == 2
    assert "scope=tools%3Aread" in auth.authorization_urls[0]
    assert "tools%3Amath" in auth.authorization_urls[1]
    assert len(consents) == 2
    assert READ_SENTENCE in consents[0].text
    assert MATH_SENTENCE in consents[1].text
    assert READ_SENTENCE not in consents[1].text
    assert "now also asks" in consents[1].text
    assert storage.tokens is not None
    assert set((storage.tokens.scope or "").split()) == {"tools:read", "tools:math"}
    decisions = "gateway_policy_decisions_total"
    registry = policy_gateway.app[METRICS].registry
    assert registry.get_sample_value(decisions, {"rule": "math", "outcome": "refused"}) == 1
    assert registry.get_sample_value(decisions, {"rule": "math", "outcome": "allowed"}) == 1

    # The grant grew (Authorized Apps shows both scopes); refreshing the first, narrower grant never widens it.
    user = await policy_gateway.storage.get_user_by_email("ada@example.com")
    assert user is not None
    apps = await authorized_apps(user.id, consents=policy_gateway.storage, grants=policy_gateway.storage)
    assert [set(app.scopes) for app in apps] == [{"tools:read", "tools:math"}]
    assert storage.client_info is not None
    refresh = {"grant_type": "refresh_token", "refresh_token": str(first.refresh_token)}
    refresh["client_id"] = storage.client_info.client_id
    status, refused = await form_post(f"{policy_gateway.url}/token", {**refresh, "scope": "tools:read tools:math"})
    assert (status, refused["error"]) == (400, "invalid_scope")
    status, refreshed = await form_post(f"{policy_gateway.url}/token", refresh)
    assert status == 200
    assert refreshed["scope"] == "tools:read"
