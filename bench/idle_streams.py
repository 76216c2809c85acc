"""Memory per idle open SSE stream: how much RSS each stream costs the gateway, and whether one replica holds N.

Run ``python bench/idle_streams.py [--streams 5000] [--step 1000] [--transport sse|streamable]`` from the
repository root (Linux: ``/proc``, ``RLIMIT_NOFILE``).

Starts the example upstream and one gateway (SQLite, logging WARNING, no stream cap, the ``unlimited`` plan) as
subprocesses, then opens streams in steps of ``--step`` from this process: ``sse`` opens legacy ``GET /mcp/sse``
streams and waits for each one's ``endpoint`` event (the stream is then relayed end to end, its session bound);
``streamable`` opens ``GET /mcp`` standalone streams (an ``initialize`` first, for a session id). After each
step, once every stream of it is open, the gateway's ``VmRSS`` is read; the figure is (RSS now - RSS before the
first stream) / streams open. The upstream's RSS is reported too (it is not the gateway's cost). Soft
``RLIMIT_NOFILE`` is raised to the hard limit here and in the servers (each stream costs the gateway two
descriptors). Target: <= 50 KB per idle stream and 5,000 streams held.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import resource
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proxy_overhead import (
    EMAIL,
    GATEWAY_MAIN,
    READY_PREFIX,
    READY_TIMEOUT,
    UPSTREAM_ARGS,
    free_port,
    gateway_cli,
    spawn,
)

TARGET_BYTES = 50 * 1024
PROTOCOL = "2025-06-18"


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the servers spawned after
    return hard


async def start(stack: contextlib.AsyncExitStack, tmp: Path, streams: int) -> tuple[str, str, int, int]:
    log = tmp / "upstream.log"
    upstream = await spawn(stack, [sys.executable, "-m", "upstream_mcp", *UPSTREAM_ARGS], None, log)
    assert upstream.stdout is not None
    async with asyncio.timeout(READY_TIMEOUT):
        while not (line := (await upstream.stdout.readline()).decode()).startswith(READY_PREFIX):
            if not line:
                raise RuntimeError(f"the upstream exited: {log.read_text()[-2000:]}")
    upstream_url = line[len(READY_PREFIX) :].strip()
    port, config = free_port(), tmp / "gateway.yaml"
    settings = {
        "public_url": f"http://127.0.0.1:{port}",
        # Every stream comes from this one address: lift the per-address connection cap (server.*).
        "server": {"host": "127.0.0.1", "port": port, "max_connections_per_address": 0},
        "upstream": {
            "url": f"{upstream_url}/mcp",
            "sse_url": f"{upstream_url}/sse",
            "max_connections": streams + 256,
            "stream_idle_timeout": 0,
        },
        "storage": {"url": f"sqlite:///{tmp / 'gateway.db'}"},
        "logging": {"level": "WARNING", "format": "text", "access_log": False},
        "quota": {"default_plan": "unlimited", "max_concurrent_streams": None},
        "limits": {"protective": {"mcp_auth_failures_per_address": 10**6}},
    }
    config.write_text(yaml.safe_dump(settings))
    await gateway_cli(config, "migrate")
    await gateway_cli(config, "users", "create", EMAIL, "--password-stdin", stdin="bench-password-123\n")
    key = (await gateway_cli(config, "keys", "create", "--user", EMAIL)).split()[-1]
    gateway = await spawn(
        stack, [sys.executable, "-c", GATEWAY_MAIN, "serve", "--config", str(config)], None, tmp / "gw.log"
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{url}/healthz") as response:
                    if response.status == 200:
                        return url, key, gateway.pid, upstream.pid
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the gateway did not become healthy: {(tmp / 'gw.log').read_text()[-2000:]}")


async def open_sse(session: aiohttp.ClientSession, url: str, key: str) -> aiohttp.ClientResponse:
    response = await session.get(f"{url}/mcp/sse", headers={"X-API-Key": key, "Accept": "text/event-stream"})
    if response.status != 200:
        raise RuntimeError(f"GET /mcp/sse: HTTP {response.status} {await response.text()}")
    async with asyncio.timeout(60):
        while not (await response.content.readline()).startswith(b"event: endpoint"):
            pass
    return response


async def open_streamable(session: aiohttp.ClientSession, url: str, key: str) -> aiohttp.ClientResponse:
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}},
    }
    headers = {"X-API-Key": key, "Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    async with session.post(f"{url}/mcp", json=init, headers=headers) as response:
        sid = response.headers.get("Mcp-Session-Id")
        await response.read()
    if sid is None:
        raise RuntimeError("the upstream opened no session: GET /mcp streams need one")
    headers = {"X-API-Key": key, "Accept": "text/event-stream", "Mcp-Session-Id": sid, "MCP-Protocol-Version": PROTOCOL}
    response = await session.get(f"{url}/mcp", headers=headers)
    if response.status != 200:
        raise RuntimeError(f"GET /mcp: HTTP {response.status} {await response.text()}")
    return response


async def bench(args: argparse.Namespace) -> int:
    hard = raise_nofile()
    print(f"RLIMIT_NOFILE {hard}; {args.streams} {args.transport} streams in steps of {args.step}", flush=True)
    opener = open_sse if args.transport == "sse" else open_streamable
    async with contextlib.AsyncExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="idle-streams-")))
        url, key, gateway, upstream = await start(stack, tmp, args.streams)
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        session = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
        await opener(session, url, key)  # warm-up: one stream, so lazily built state is in the baseline
        await asyncio.sleep(1)
        base_gw, base_up = rss_bytes(gateway), rss_bytes(upstream)
        print(f"baseline RSS: gateway {base_gw / 2**20:.1f} MiB, upstream {base_up / 2**20:.1f} MiB", flush=True)
        held: list[aiohttp.ClientResponse] = []
        stack.callback(lambda: [r.close() for r in held])
        limit = asyncio.Semaphore(args.parallel)

        async def one() -> None:
            async with limit:
                held.append(await opener(session, url, key))

        worst = 0.0
        print(f"{'streams':>8} {'gateway MiB':>12} {'KiB/stream':>10} {'upstream MiB':>13} {'open s':>7}")
        while len(held) < args.streams:
            started = time.perf_counter()
            batch = min(args.step, args.streams - len(held))
            results = await asyncio.gather(*(one() for _ in range(batch)), return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                print(f"{len(errors)} streams failed to open, first: {errors[0]!r}")
                return 1
            await asyncio.sleep(args.settle)
            gc.collect()
            gw, up = rss_bytes(gateway), rss_bytes(upstream)
            per = (gw - base_gw) / len(held)
            worst = max(worst, per)
            print(
                f"{len(held):>8} {gw / 2**20:>12.1f} {per / 1024:>10.1f} {up / 2**20:>13.1f} "
                f"{time.perf_counter() - started:>7.1f}",
                flush=True,
            )
        alive = sum(1 for r in held if not r.content.at_eof())
        print(f"streams still open at the end: {alive} of {len(held)}")
        ok = per <= TARGET_BYTES and alive == args.streams
        print(
            f"{'PASS' if ok else 'MISS'} {per / 1024:.1f} KiB per idle stream at {len(held)} streams "
            f"(target <= {TARGET_BYTES / 1024:.0f} KiB), {alive} held (target {args.streams})"
        )
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=5000)
    parser.add_argument("--step", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=50, help="streams being opened at once")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds to wait after each step")
    parser.add_argument("--transport", choices=("sse", "streamable"), default="sse")
    return asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
