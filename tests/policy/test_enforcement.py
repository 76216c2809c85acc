"""Enforcement and filtered lists on ``/mcp``, with API keys holding minimal scopes, against a scripted upstream
that records what reached it (so a refusal can be shown to forward and charge nothing)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import generate_latest

from gateway.audit import AUDIT
from gateway.metrics import METRICS
from gateway.storage import Storage
from tests.policy.conftest import POLICY
from tests.policy.scripted import TOOLS, all_tools, call, key_with, listing, mcp_like, post
from tests.support.gateway import GatewayHandle, running_gateway
from tests.support.scripted_upstream import ScriptedUpstream, scripted_upstream


@pytest.fixture
async def gw(sqlite_storage: Storage, upstream_json: ScriptedUpstream) -> AsyncIterator[GatewayHandle]:
    async with running_gateway(storage=sqlite_storage, upstream_url=upstream_json.mcp_url, overrides=POLICY) as g:
        yield g


async def test_a_key_with_a_minimal_scope_sees_only_its_tools_on_every_page_never_cached_as_shared(
    gw: GatewayHandle,
):
    names, pages = await all_tools(gw, await key_with(gw, "tools:read"))
    assert names == ["echo", "whoami"]
    assert len(pages) == 2
    assert all(page["cacheScope"] == "private" for page in pages)


async def test_a_key_without_scopes_and_a_key_with_mcp_tools_keep_seeing_everything_unmarked(gw: GatewayHandle):
    for key in (await key_with(gw), await key_with(gw, "mcp:tools")):
        names, pages = await all_tools(gw, key)
        assert names == ["add", "echo", "slow_count", "whoami"]
        assert all(page["cacheScope"] == "public" for page in pages)


async def test_a_broader_scope_implies_the_narrower_one(gw: GatewayHandle):
    names, _ = await all_tools(gw, await key_with(gw, "tools:math"))
    assert names == ["add", "echo", "whoami"]


async def test_resources_and_prompts_lists_are_filtered_too(gw: GatewayHandle):
    key = await key_with(gw, "tools:read")
    _, _, resources = await post(gw, key, listing("resources/list"))
    _, _, prompts = await post(gw, key, listing("prompts/list"))
    assert [r["uri"] for r in resources["result"]["resources"]] == ["info://server"]
    assert [p["name"] for p in prompts["result"]["prompts"]] == ["summarize"]


async def test_a_key_with_a_minimal_scope_cannot_call_outside_it_and_nothing_is_forwarded_or_charged(
    gw: GatewayHandle, upstream_json: ScriptedUpstream
):
    key = await key_with(gw, "tools:read")
    status, headers, body = await post(gw, key, call("add"))
    assert status == 403
    challenge = headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="tools:math"' in challenge
    assert f'resource_metadata="{gw.url}/.well-known/oauth-protected-resource/mcp"' in challenge
    assert body["id"] == 1
    assert body["error"]["data"] == {"error": "insufficient_scope", "scope": "tools:math"}
    for target, method, field in [("file:///secret", "resources/read", "uri"), ("roast", "prompts/get", "name")]:
        status, headers, _ = await post(gw, key, call(target, method=method, field=field))
        assert status == 403
        assert 'scope="mcp:tools"' in headers["WWW-Authenticate"]
    assert upstream_json.requests == []
    assert gw.app[METRICS].registry.get_sample_value("gateway_quota_admitted_total") in (None, 0.0)
    status, _, body = await post(gw, key, call("echo"))
    assert status == 200


async def test_a_batch_is_judged_per_member_and_the_answer_names_each_refused_one(
    gw: GatewayHandle, upstream_json: ScriptedUpstream
):
    key = await key_with(gw, "tools:read")
    batch = [call("echo", 1), call("add", 2), call("slow_count", 3), listing("tools/list", 4)]
    status, headers, body = await post(gw, key, batch)
    assert status == 403
    assert [item["id"] for item in body] == [2, 3]
    assert [item["error"]["data"]["scope"] for item in body] == ["tools:math", "mcp:tools"]
    assert 'scope="tools:math mcp:tools"' in headers["WWW-Authenticate"]
    assert upstream_json.requests == []

    status, _, body = await post(gw, key, [call("echo", 1), listing("tools/list", 2), listing("prompts/list", 3)])
    assert status == 200
    assert body[0]["result"]["content"][0]["text"] == "ok"
    assert [t["name"] for t in body[1]["result"]["tools"]] == ["echo"]
    assert [p["name"] for p in body[2]["result"]["prompts"]] == ["summarize"]


async def test_an_mcp_name_header_naming_a_forbidden_tool_is_refused_before_the_body_matters(
    gw: GatewayHandle, upstream_json: ScriptedUpstream
):
    key = await key_with(gw, "tools:read")
    v2026 = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call"}
    # The body names an allowed tool (a mismatch the gateway would answer 400) or is not even JSON: still 403.
    for body in (call("echo"), "not json at all"):
        status, headers, _ = await post(gw, key, body, **v2026, **{"Mcp-Name": "add"})
        assert status == 403
        assert 'scope="tools:math"' in headers["WWW-Authenticate"]
    # An allowed Mcp-Name over a body naming a forbidden tool is the header/body mismatch (case 80).
    status, _, body = await post(gw, key, call("add"), **v2026, **{"Mcp-Name": "echo"})
    assert (status, body["error"]["code"]) == (400, -32020)
    status, _, _ = await post(gw, key, call("echo"), **v2026, **{"Mcp-Name": "echo"})
    assert status == 200
    assert len(upstream_json.requests) == 1


async def test_a_weighted_rule_charges_its_weight_per_call(sqlite_storage: Storage, upstream_json: ScriptedUpstream):
    overrides = {**POLICY, "quota": {"plans": {"free": {"per_minute": 12}}}}
    async with running_gateway(storage=sqlite_storage, upstream_url=upstream_json.mcp_url, overrides=overrides) as g:
        key = await key_with(g, "tools:math")
        status, headers, _ = await post(g, key, call("add"))
        assert status == 200
        assert "r=2" in headers["RateLimit"]
        status, _, _ = await post(g, key, call("add"))
        assert status == 429


@pytest.fixture
async def upstream_sse() -> AsyncIterator[ScriptedUpstream]:
    async with scripted_upstream(mcp_like(sse=True)) as up:
        yield up


async def test_sse_answers_are_filtered_event_by_event_with_pagination_and_batches(
    sqlite_storage: Storage, upstream_sse: ScriptedUpstream
):
    async with running_gateway(storage=sqlite_storage, upstream_url=upstream_sse.mcp_url, overrides=POLICY) as g:
        key = await key_with(g, "tools:read")
        names, pages = await all_tools(g, key)
        assert names == ["echo", "whoami"]
        assert all(page["cacheScope"] == "private" for page in pages)
        status, _, body = await post(g, key, [listing("tools/list", 7), call("echo", 8)])
        assert status == 200
        assert [t["name"] for t in body[0]["result"]["tools"]] == ["echo"]
        assert body[1]["id"] == 8


async def replays_a_list_answer(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    answer = {"jsonrpc": "2.0", "id": 3, "result": {"tools": TOOLS}}
    await response.write(f"id: 9\ndata: {json.dumps(answer)}\n\n".encode())
    return response


async def test_a_resumed_get_stream_replaying_a_list_answer_is_filtered_too(sqlite_storage: Storage):
    async with (
        scripted_upstream(replays_a_list_answer) as up,
        running_gateway(storage=sqlite_storage, upstream_url=up.mcp_url, overrides=POLICY) as g,
    ):
        key = await key_with(g, "tools:read")
        headers = {"X-API-Key": key, "Accept": "text/event-stream", "Last-Event-ID": "8"}
        async with aiohttp.ClientSession() as http, http.get(g.mcp_url, headers=headers) as response:
            raw = (await response.read()).decode()
    data = json.loads(next(line[6:] for line in raw.splitlines() if line.startswith("data: ")))
    assert [tool["name"] for tool in data["result"]["tools"]] == ["echo", "whoami"]
    assert "id: 9" in raw


async def test_refusals_and_calls_are_audited_and_counted_by_rule_name_never_by_tool_name(gw: GatewayHandle):
    events: list[tuple[str, dict[str, object]]] = []
    gw.app[AUDIT].listen(lambda name, fields: events.append((name, fields)))
    key = await key_with(gw, "tools:read")
    await post(gw, key, call("add"))
    await post(gw, key, call("echo"))
    await post(gw, key, call("some-unlisted-tool"))
    await post(gw, key, [call("echo", 1), call("add", 2)])  # refused: its allowed member is no call
    assert [(name, fields["rule"], fields["target"]) for name, fields in events] == [
        ("policy.refused", "math", "add"),
        ("policy.allowed", "reading", "echo"),
        ("policy.refused", "default", "some-unlisted-tool"),
        ("policy.refused", "math", "add"),
    ]
    assert events[0][1]["reason"] == "insufficient_scope"
    exposition = generate_latest(gw.app[METRICS].registry).decode()
    labels = {
        line.split("{")[1].split("}")[0]
        for line in exposition.splitlines()
        if "gateway_policy_decisions_total{" in line
    }
    assert labels == {
        'outcome="refused",rule="math"',
        'outcome="allowed",rule="reading"',
        'outcome="refused",rule="default"',
    }
