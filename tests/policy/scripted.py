"""A scripted upstream answering MCP lists page by page (JSON or SSE), and helpers to talk to ``/mcp`` with keys."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from aiohttp import web

from tests.support.gateway import GatewayHandle

TOOLS = [{"name": n, "inputSchema": {"type": "object"}} for n in ("add", "echo", "slow_count", "whoami")]
PAGE = 2
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def _answer(message: dict[str, Any]) -> dict[str, Any]:
    method, params = message["method"], message.get("params") or {}
    if method == "tools/list":
        start = int(params.get("cursor") or 0)
        result: dict[str, Any] = {"tools": TOOLS[start : start + PAGE], "cacheScope": "public", "ttlMs": 60000}
        if start + PAGE < len(TOOLS):
            result["nextCursor"] = str(start + PAGE)
        return {"jsonrpc": "2.0", "id": message["id"], "result": result}
    if method == "resources/list":
        uris = ["info://server", "file:///secret"]
        return {"jsonrpc": "2.0", "id": message["id"], "result": {"resources": [{"uri": u, "name": u} for u in uris]}}
    if method == "prompts/list":
        names = ["summarize", "roast"]
        return {"jsonrpc": "2.0", "id": message["id"], "result": {"prompts": [{"name": n} for n in names]}}
    return {"jsonrpc": "2.0", "id": message.get("id"), "result": {"content": [{"type": "text", "text": "ok"}]}}


def mcp_like(sse: bool) -> Any:
    async def behaviour(request: web.Request) -> web.StreamResponse:
        message = json.loads(await request.read())
        answer: Any = [_answer(m) for m in message] if isinstance(message, list) else _answer(message)
        if not sse:
            return web.json_response(answer)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for item in answer if isinstance(answer, list) else [answer]:
            text = json.dumps(item)
            # Split each event across writes (and CRLF line ends) to exercise the event reassembly.
            await response.write(f"event: message\r\nid: {item['id']}\r\ndata: {text[:20]}".encode())
            await response.write(f"{text[20:]}\r\n\r\n".encode())
        return response

    return behaviour


async def key_with(gw: GatewayHandle, *scopes: str) -> str:
    user = await gw.new_user()
    _, minted = await gw.accounts.create_key(user, name="k", scope=" ".join(scopes) or None)
    return minted.key


def call(name: str, id_: int = 1, method: str = "tools/call", field: str = "name") -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "method": method, "params": {field: name, "arguments": {}}}


def listing(method: str, id_: int = 1, cursor: str | None = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "method": method, "params": {"cursor": cursor} if cursor else {}}


async def post(gw: GatewayHandle, key: str, body: object, **headers: str) -> tuple[int, dict[str, str], Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(gw.mcp_url, data=json.dumps(body), headers={**HEADERS, "X-API-Key": key, **headers}) as response,
    ):
        raw = await response.read()
        if response.content_type == "text/event-stream":
            events = [e for e in raw.decode().replace("\r\n", "\n").split("\n\n") if e.strip()]
            datas = ["\n".join(ln[6:] for ln in e.split("\n") if ln.startswith("data: ")) for e in events]
            parsed: Any = [json.loads(d) for d in datas]
            return response.status, dict(response.headers), parsed[0] if len(parsed) == 1 else parsed
        return response.status, dict(response.headers), json.loads(raw)


async def all_tools(gw: GatewayHandle, key: str) -> tuple[list[str], list[dict[str, Any]]]:
    names: list[str] = []
    results: list[dict[str, Any]] = []
    cursor = None
    while True:
        status, _, body = await post(gw, key, listing("tools/list", cursor=cursor))
        assert status == 200
        results.append(body["result"])
        names += [tool["name"] for tool in body["result"]["tools"]]
        cursor = body["result"].get("nextCursor")
        if cursor is None:
            return names, results
