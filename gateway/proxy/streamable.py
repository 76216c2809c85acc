"""Streamable HTTP (MCP transports): ``POST``, ``GET`` and ``DELETE`` on ``/mcp``, streamed through."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.errors import HeaderMismatch
from gateway.policy.setup import POLICY
from gateway.proxy.body import parse_message, read_body
from gateway.proxy.context import PROXY
from gateway.proxy.guard import authenticate
from gateway.proxy.headers import refuse_repeats
from gateway.proxy.sessions import STREAMABLE
from gateway.quota.plans import STREAM_OPEN_COST

SESSION_HEADER = "Mcp-Session-Id"
# MCP 2026-07-28: methods whose target is named in ``Mcp-Name``, and where the body names it.
_NAMED = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}


def check_routing_headers(headers: Any, message: object) -> None:
    """MCP 2026-07-28: ``Mcp-Method`` / ``Mcp-Name`` must agree with the body (400, -32020)."""
    method_header = headers.get("Mcp-Method")
    name_header = headers.get("Mcp-Name")
    if method_header is None and name_header is None:
        return
    if not isinstance(message, dict):
        return
    method = message.get("method")
    if method_header is not None and method_header != method:
        raise HeaderMismatch("Mcp-Method header does not match the request body")
    field = _NAMED.get(method) if isinstance(method, str) else None
    if name_header is not None and field is not None:
        params = message.get("params")
        target = params.get(field) if isinstance(params, dict) else None
        if name_header != target:
            raise HeaderMismatch("Mcp-Name header does not match the request body")


async def handle_mcp(request: web.Request) -> web.StreamResponse:
    if request.method == "HEAD":  # it would reach the upstream uncharged (and may open a session there)
        raise web.HTTPMethodNotAllowed("HEAD", ["POST", "GET", "DELETE"])
    app = request.app
    proxy, policy = app[PROXY], app[POLICY]
    proxy.check_origin(request)
    principal = await authenticate(request)
    refuse_repeats(request.headers)
    body: bytes | None = None
    cost = 0
    if request.method == "POST":
        policy.judge_headers(request, principal)  # a forbidden Mcp-Name: 403 before the body matters
        body = await read_body(request)
        message = parse_message(body)
        verdict = policy.judge(request, principal, message, check_routing_headers, headers_judged=True)
        cost = proxy.quota.cost_of(principal, message) + verdict.extra_cost(proxy.quota.plan(principal))
    else:
        verdict = policy.stream_verdict(principal)  # GET: a resumed stream may replay list answers
        cost = STREAM_OPEN_COST if request.method == "GET" else 0
    session_id = request.headers.get(SESSION_HEADER)
    if session_id is not None:
        await proxy.sessions.require(session_id, principal, kind=STREAMABLE)
    admission = await proxy.quota.admit(principal, cost, stream=request.method == "GET")
    headers = await proxy.upstream_headers(request, principal)
    opening = proxy.upstream.open(request.method, proxy.upstream_url, headers=headers, body=body)
    async with admission.around(opening) as upstream:
        opened = upstream.headers.get(SESSION_HEADER)
        if session_id is None and opened is not None and upstream.status < 300:
            await proxy.sessions.bind(opened, principal, kind=STREAMABLE)
        if session_id is not None and (
            upstream.status == 404 or (request.method == "DELETE" and upstream.status < 300)
        ):
            await proxy.sessions.forget(session_id)
        async with proxy.streams.watch(request, principal, upstream):
            return await policy.relay(proxy.upstream, request, upstream, verdict, admission.headers)
