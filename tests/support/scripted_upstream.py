"""A scripted stand-in for an upstream MCP server, for fault tests only.

The real ``upstream_mcp`` is used wherever MCP behaviour matters; this one exists to produce faults a
well-behaved server never would (silence, a foreign SSE endpoint, a 401) and to record exactly what
reached it (so a test can prove something was *not* forwarded, or that a request was cancelled).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

Behaviour = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class ScriptedUpstream:
    url: str
    requests: list[Recorded] = field(default_factory=list)
    received: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    behaviour: Behaviour | None = None

    @property
    def mcp_url(self) -> str:
        return f"{self.url}/mcp"

    @property
    def sse_url(self) -> str:
        return f"{self.url}/sse"


async def json_ok(request: web.Request) -> web.StreamResponse:
    return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {}})


async def opens_session(request: web.Request) -> web.StreamResponse:
    return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {}}, headers={"Mcp-Session-Id": "s-123"})


async def never_answers(request: web.Request) -> web.StreamResponse:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def answers_401(request: web.Request) -> web.StreamResponse:
    return web.json_response(
        {"error": "invalid_token"},
        status=401,
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"', "Set-Cookie": "__Host-gw_session=x; Path=/"},
    )


def sse_endpoint(data: str) -> Behaviour:
    async def behaviour(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(f"event: endpoint\r\ndata: {data}\r\n\r\n".encode())
        await asyncio.Event().wait()
        return response

    return behaviour


def slow_stream(first: bytes) -> Behaviour:
    """Sends one SSE event, then stays open until the gateway goes away."""

    async def behaviour(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(first)
        await asyncio.Event().wait()
        return response

    return behaviour


@contextlib.asynccontextmanager
async def scripted_upstream(behaviour: Behaviour = json_ok) -> AsyncIterator[ScriptedUpstream]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    state = ScriptedUpstream(url=f"http://127.0.0.1:{sock.getsockname()[1]}", behaviour=behaviour)

    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        state.requests.append(Recorded(request.method, request.path_qs, dict(request.headers), body))
        state.received.set()
        assert state.behaviour is not None
        try:
            return await state.behaviour(request)
        except asyncio.CancelledError:
            state.cancelled.set()
            raise

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    try:
        yield state
    finally:
        await runner.cleanup()


def jsonrpc(method: str, params: dict[str, object] | None = None, id_: int = 1) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": id_, "method": method, "params": params or {}}).encode()
