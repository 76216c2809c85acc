"""The yardstick of ``bench/ceiling.py``: the least a Python proxy can do — aiohttp on uvloop, no authentication, no
quota, no metrics, the upstream's answer streamed back chunk by chunk. Not part of the gateway.

``python bench/naive_proxy.py --port P --upstream http://127.0.0.1:Q/mcp``
"""

from __future__ import annotations

import argparse

import aiohttp
from aiohttp import web

HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host", "te", "upgrade"})
SESSION = web.AppKey("session", aiohttp.ClientSession)


async def forward(request: web.Request) -> web.StreamResponse:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    async with request.app[SESSION].request(
        request.method, request.app[UPSTREAM], headers=headers, data=await request.read()
    ) as answer:
        response = web.StreamResponse(
            status=answer.status,
            headers={k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP},
        )
        if answer.content_length is not None:
            response.content_length = answer.content_length
        try:
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
        except ConnectionResetError:  # the load generator hung up at the end of a run
            pass
        return response


UPSTREAM = web.AppKey("upstream", str)


async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256), auto_decompress=False, skip_auto_headers=("User-Agent",)
    ) as session:
        app[SESSION] = session
        yield


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    app = web.Application()
    app[UPSTREAM] = args.upstream
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/mcp", forward)
    try:
        import uvloop
    except ImportError:
        uvloop = None  # type: ignore[assignment]
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop() if uvloop else None,
    )


if __name__ == "__main__":
    main()
