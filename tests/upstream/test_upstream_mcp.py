"""The example upstream, tested as a real subprocess over every transport a client can use."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp_types import TextContent, TextResourceContents

from tests.support.mcp_clients import (
    CLIENT_FACTORIES,
    ProgressRecorder,
    call_tool_with_progress,
    legacy_sse_client,
    stateless_client,
    streamable_session_client,
)
from tests.support.upstream import UpstreamProcess, UpstreamStartError, run_upstream
from upstream_mcp.server import BIG_TEXT_LINE_LENGTH, big_text, big_text_line

TRANSPORTS = list(CLIENT_FACTORIES)
TIMEOUT = 30.0

LEGACY_SSE_BIG_TEXT_KIB = 1000
"""The SDK's legacy ``sse_client`` caps one SSE event at 1 MiB (not configurable), so a 1024 KiB
result plus its JSON-RPC envelope cannot pass it; 1000 KiB is the largest round size that fits."""

STATELESS_HEADERS = {"mcp-protocol-version": "2026-07-28"}
JSON_AND_SSE = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def connect(
    transport: str, upstream: UpstreamProcess, headers: dict[str, str] | None = None
) -> AbstractAsyncContextManager[Client]:
    """A connected client for ``transport`` ('streamable-session', 'stateless-2026' or 'legacy-sse')."""
    url = upstream.sse_url if transport == "legacy-sse" else upstream.mcp_url
    return CLIENT_FACTORIES[transport](url, headers)


def text_of(content: Any) -> str:
    assert isinstance(content, TextContent)
    return content.text


def stateless_call(request_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """A raw 2026-07-28 JSON-RPC request body, with the per-request ``_meta`` the protocol requires."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        **params.pop("_meta", {}),
    }
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {**params, "_meta": meta}}


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=TIMEOUT) as client:
        yield client


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_every_transport_lists_the_example_tools(upstream: UpstreamProcess, transport: str) -> None:
    async with asyncio.timeout(TIMEOUT), connect(transport, upstream) as client:
        tools = await client.list_tools()

    assert {tool.name for tool in tools.tools} == {"echo", "add", "slow_count", "big_text", "whoami"}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_echo_and_add_answer_over_every_transport(upstream: UpstreamProcess, transport: str) -> None:
    async with asyncio.timeout(TIMEOUT), connect(transport, upstream) as client:
        echoed = await client.call_tool("echo", {"text": "hello, upstream"})
        added = await client.call_tool("add", {"a": 2, "b": 3.5})

    assert not echoed.is_error
    assert text_of(echoed.content[0]) == "hello, upstream"
    assert echoed.structured_content == {"result": "hello, upstream"}
    assert not added.is_error
    assert added.structured_content == {"result": 5.5}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_big_text_arrives_intact_with_every_numbered_line(upstream: UpstreamProcess, transport: str) -> None:
    kib = LEGACY_SSE_BIG_TEXT_KIB if transport == "legacy-sse" else 1024

    async with asyncio.timeout(TIMEOUT), connect(transport, upstream) as client:
        result = await client.call_tool("big_text", {"kib": kib})

    text = text_of(result.content[0])
    assert len(text) == kib * 1024
    assert text.isascii()
    lines = text.splitlines(keepends=True)
    assert len(lines) == kib * 1024 // BIG_TEXT_LINE_LENGTH
    bad = [number for number, line in enumerate(lines) if line != big_text_line(number)]
    assert bad == [], f"{len(bad)} corrupted lines, first at {bad[:1]}"
    assert text == big_text(kib)


async def test_big_text_of_1024_kib_is_exactly_one_mebibyte_of_numbered_lines() -> None:
    text = big_text(1024)

    assert len(text) == 1024 * 1024
    assert re.fullmatch(r"(\d{8} [A-Za-z0-9]{54}\n)+", text)
    assert text.splitlines()[-1].startswith(f"{1024 * 16 - 1:08d} ")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_slow_count_progress_arrives_while_the_call_is_still_running(
    upstream: UpstreamProcess, transport: str
) -> None:
    recorder = ProgressRecorder()

    async with asyncio.timeout(TIMEOUT), connect(transport, upstream) as client:
        call = asyncio.create_task(
            call_tool_with_progress(client, "slow_count", {"steps": 3, "delay": 0.5}, recorder=recorder)
        )
        await recorder.first.wait()
        still_running_at_first_progress = not call.done()
        timed = await call

    assert still_running_at_first_progress
    assert text_of(timed.result.content[0]) == "counted to 3"
    assert [(event.progress, event.total) for event in timed.progress] == [(1, 3), (2, 3), (3, 3)]
    assert timed.progress[0].message == "step 1 of 3"
    first_progress_lead = timed.finished_at - timed.progress[0].received_at
    assert first_progress_lead >= 0.5, f"first progress only {first_progress_lead:.3f}s before the result"


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        ({"steps": 1001, "delay": 0}, "steps must be between 0 and 1000, got 1001"),
        ({"steps": -1, "delay": 0}, "steps must be between 0 and 1000, got -1"),
        ({"steps": 1, "delay": 61}, "delay must be between 0 and 60 seconds, got 61"),
    ],
)
async def test_slow_count_refuses_out_of_bounds_arguments_with_a_tool_error(
    upstream: UpstreamProcess, arguments: dict[str, Any], complaint: str
) -> None:
    async with asyncio.timeout(TIMEOUT), stateless_client(upstream.mcp_url) as client:
        result = await client.call_tool("slow_count", arguments)

    assert result.is_error
    assert complaint in text_of(result.content[0])


async def test_big_text_refuses_more_than_16_mib(upstream: UpstreamProcess) -> None:
    async with asyncio.timeout(TIMEOUT), stateless_client(upstream.mcp_url) as client:
        result = await client.call_tool("big_text", {"kib": 16385})

    assert result.is_error
    assert "kib must be between 0 and 16384, got 16385" in text_of(result.content[0])


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_whoami_echoes_gateway_headers_and_only_the_names_of_the_rest(
    upstream: UpstreamProcess, transport: str
) -> None:
    headers = {
        "X-Gateway-Subject": "user-42",
        "X-Gateway-Scopes": "tools:read tools:call",
        "X-API-Key": "sk-must-not-echo",
        "Authorization": "Bearer must-not-echo",
        "Cookie": "session=must-not-echo",
    }

    async with asyncio.timeout(TIMEOUT), connect(transport, upstream, headers) as client:
        result = await client.call_tool("whoami", {})

    assert not result.is_error
    assert result.structured_content is not None
    assert result.structured_content["identity"] == {
        "x-gateway-subject": "user-42",
        "x-gateway-scopes": "tools:read tools:call",
    }
    names = result.structured_content["header_names"]
    assert names == sorted(names)
    assert {"x-api-key", "authorization", "cookie", "host", "content-type"} <= set(names)
    assert "must-not-echo" not in json.dumps(result.model_dump(mode="json"))


async def test_whoami_names_the_headers_each_transport_puts_on_a_call(upstream: UpstreamProcess) -> None:
    seen: dict[str, set[str]] = {}
    for transport in TRANSPORTS:
        async with asyncio.timeout(TIMEOUT), connect(transport, upstream) as client:
            result = await client.call_tool("whoami", {})
        assert result.structured_content is not None
        assert result.structured_content["identity"] == {}
        seen[transport] = set(result.structured_content["header_names"])

    assert {"mcp-session-id", "mcp-protocol-version"} <= seen["streamable-session"]
    assert "mcp-method" not in seen["streamable-session"]
    assert {"mcp-protocol-version", "mcp-method", "mcp-name"} <= seen["stateless-2026"]
    assert "mcp-session-id" not in seen["stateless-2026"]
    assert not {"mcp-session-id", "mcp-protocol-version", "mcp-method"} & seen["legacy-sse"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_resources_and_the_prompt_are_readable_over_every_transport(
    upstream: UpstreamProcess, transport: str
) -> None:
    async with asyncio.timeout(TIMEOUT), connect(transport, upstream) as client:
        resources = await client.list_resources()
        templates = await client.list_resource_templates()
        info = await client.read_resource("info://server")
        greeting = await client.read_resource("greeting://ada")
        prompts = await client.list_prompts()
        prompt = await client.get_prompt("summarize", {"text": "The quick brown fox."})

    assert [str(resource.uri) for resource in resources.resources] == ["info://server"]
    assert [template.uri_template for template in templates.resource_templates] == ["greeting://{name}"]
    info_contents = info.contents[0]
    assert isinstance(info_contents, TextResourceContents)
    assert json.loads(info_contents.text)["transports"] == {
        "streamable-http": "/mcp",
        "sse": "/sse",
        "sse-messages": "/messages/",
    }
    greeting_contents = greeting.contents[0]
    assert isinstance(greeting_contents, TextResourceContents)
    assert greeting_contents.text == "Hello, ada!"
    assert [p.name for p in prompts.prompts] == ["summarize"]
    assert "The quick brown fox." in text_of(prompt.messages[0].content)


async def test_session_and_stateless_clients_negotiate_the_expected_protocol_versions(
    upstream: UpstreamProcess,
) -> None:
    async with asyncio.timeout(TIMEOUT):
        async with streamable_session_client(upstream.mcp_url) as session:
            session_version = session.protocol_version
        async with stateless_client(upstream.mcp_url) as stateless:
            stateless_version = stateless.protocol_version
        async with legacy_sse_client(upstream.sse_url) as legacy:
            legacy_version = legacy.protocol_version

    assert session_version == "2025-11-25"
    assert stateless_version == "2026-07-28"
    assert legacy_version == "2025-11-25"


async def test_a_quick_stateless_call_is_answered_with_plain_json_and_no_session(
    upstream: UpstreamProcess, http: httpx2.AsyncClient
) -> None:
    body = stateless_call(1, "tools/call", {"name": "echo", "arguments": {"text": "hi"}})
    headers = {**JSON_AND_SSE, **STATELESS_HEADERS, "mcp-method": "tools/call", "mcp-name": "echo"}

    response = await http.post(upstream.mcp_url, json=body, headers=headers)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert "mcp-session-id" not in response.headers
    assert response.json()["result"]["structuredContent"] == {"result": "hi"}


async def test_a_stateless_call_with_progress_switches_its_response_to_an_event_stream(
    upstream: UpstreamProcess, http: httpx2.AsyncClient
) -> None:
    body = stateless_call(
        7,
        "tools/call",
        {"name": "slow_count", "arguments": {"steps": 2, "delay": 0}, "_meta": {"progressToken": "tok"}},
    )
    headers = {**JSON_AND_SSE, **STATELESS_HEADERS, "mcp-method": "tools/call", "mcp-name": "slow_count"}

    response = await http.post(upstream.mcp_url, json=body, headers=headers)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [
        json.loads(line.removeprefix("data: ")) for line in response.text.splitlines() if line.startswith("data: ")
    ]
    assert [event.get("method") for event in events] == ["notifications/progress"] * 2 + [None]
    assert events[0]["params"] == {"progressToken": "tok", "progress": 1, "total": 2, "message": "step 1 of 2"}
    assert events[-1]["id"] == 7


async def test_a_stateless_request_whose_mcp_method_header_disagrees_with_the_body_is_rejected(
    upstream: UpstreamProcess, http: httpx2.AsyncClient
) -> None:
    body = stateless_call(1, "tools/list", {})
    headers = {**JSON_AND_SSE, **STATELESS_HEADERS, "mcp-method": "tools/call"}

    response = await http.post(upstream.mcp_url, json=body, headers=headers)

    assert response.status_code == 400
    assert "mcp-method" in response.json()["error"]["message"]


async def test_the_legacy_sse_endpoint_event_names_a_relative_messages_path(
    upstream: UpstreamProcess, http: httpx2.AsyncClient
) -> None:
    async with asyncio.timeout(TIMEOUT), http.stream("GET", upstream.sse_url) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.aiter_lines()
        event = [await anext(lines), await anext(lines)]

    assert event[0] == "event: endpoint"
    assert re.fullmatch(r"data: /messages/\?session_id=[0-9a-f]{32}", event[1])


@pytest.mark.parametrize("path", ["/mcp", "/sse"])
async def test_a_foreign_host_header_is_refused_but_the_upstreams_own_host_port_is_accepted(
    upstream: UpstreamProcess, http: httpx2.AsyncClient, path: str
) -> None:
    url = f"{upstream.base_url}{path}"
    body = stateless_call(1, "tools/list", {})
    headers = {**JSON_AND_SSE, **STATELESS_HEADERS, "mcp-method": "tools/list"}
    send = (
        (lambda extra: http.post(url, json=body, headers={**headers, **extra}))
        if path == "/mcp"
        else (lambda extra: http.get(url, headers={"accept": "text/event-stream", **extra}))
    )

    foreign = await send({"host": "attacker.example"})
    foreign_origin = await send({"origin": "http://attacker.example"})

    assert foreign.status_code == 421
    assert foreign_origin.status_code == 403
    if path == "/mcp":
        own = await send({"host": f"127.0.0.1:{upstream.port}", "origin": f"http://localhost:{upstream.port}"})
        assert own.status_code == 200


async def test_allowed_host_lets_a_proxy_use_another_name_for_the_upstream(http: httpx2.AsyncClient) -> None:
    extra_args = ["--allowed-host", "upstream.internal", "--allowed-origin", "https://app.example"]
    body = stateless_call(1, "tools/list", {})
    headers = {**JSON_AND_SSE, **STATELESS_HEADERS, "mcp-method": "tools/list"}

    async with run_upstream(extra_args=extra_args) as upstream:
        named = await http.post(upstream.mcp_url, json=body, headers={**headers, "host": "upstream.internal:8080"})
        with_origin = await http.post(upstream.mcp_url, json=body, headers={**headers, "origin": "https://app.example"})
        other = await http.post(upstream.mcp_url, json=body, headers={**headers, "host": "other.internal"})

    assert named.status_code == 200
    assert with_origin.status_code == 200
    assert other.status_code == 421


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_the_upstream_shuts_down_cleanly_on_a_signal_even_with_streams_open(sig: signal.Signals) -> None:
    async with run_upstream() as upstream:
        async with (
            asyncio.timeout(TIMEOUT),
            streamable_session_client(upstream.mcp_url) as session,
            legacy_sse_client(upstream.sse_url) as legacy,
        ):
            await session.call_tool("echo", {"text": "before shutdown"})
            await legacy.call_tool("echo", {"text": "before shutdown"})
            upstream.process.send_signal(sig)
            status = await upstream.process.wait()

    output = upstream.output_tail()
    assert status == 0
    assert "Application shutdown complete" in output
    assert "Traceback" not in output
    assert " ERROR " not in output


async def test_run_upstream_reports_the_output_tail_when_the_server_cannot_start() -> None:
    with pytest.raises(UpstreamStartError, match=r"(?s)exited without printing.*unrecognized arguments"):
        async with run_upstream(extra_args=["--no-such-flag"]):
            pass
