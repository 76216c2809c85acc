"""``mcp-gateway doctor`` against real deployments: a good one, and ones broken one way each."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from gateway.clock import ManualClock, SystemClock
from gateway.config import GatewayConfig, parse_config
from gateway.doctor import Finding, diagnose, exit_status, render
from gateway.storage import Storage
from tests.support.gateway import UNUSED_UPSTREAM, running_gateway
from tests.support.upstream import UpstreamProcess

METRICS_TOKEN = "m" * 40
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host"}


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _config_of(url: str, tmp_path: Path, upstream_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "public_url": url,
        "upstream": {"url": upstream_url},
        "storage": {"url": f"sqlite:///{tmp_path / 'gateway.db'}"},
        "metrics": {"bearer_token": METRICS_TOKEN},
        **extra,
    }


def _failed(findings: list[Finding]) -> dict[str, str]:
    return {f.check: f.message for f in findings if f.level == "fail"}


@contextlib.asynccontextmanager
async def _good_gateway(storage: Storage, upstream: UpstreamProcess) -> AsyncIterator[str]:
    async with running_gateway(
        storage=storage, upstream_url=upstream.mcp_url, overrides={"metrics": {"bearer_token": METRICS_TOKEN}}
    ) as handle:
        yield handle.url


async def test_doctor_finds_nothing_wrong_with_a_good_deployment_and_exits_zero(
    sqlite_storage: Storage, upstream: UpstreamProcess, tmp_path: Path
) -> None:
    async with _good_gateway(sqlite_storage, upstream) as url:
        raw = _config_of(url, tmp_path, upstream.mcp_url)
        findings = await diagnose(parse_config(raw), clock=SystemClock())
        assert _failed(findings) == {}
        assert {"reachable", "challenge", "resource_metadata", "authorization_server", "upstream", "storage"} <= {
            f.check for f in findings
        }
        config_file = tmp_path / "gateway.yaml"
        config_file.write_text(yaml.safe_dump(raw))
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "doctor", "--config", str(config_file), stdout=asyncio.subprocess.PIPE
        )
        out, _ = await process.communicate()
    assert process.returncode == 0, out.decode()
    assert "everything looks right" in out.decode()


async def test_doctor_names_a_public_url_nothing_answers_at_and_exits_non_zero(
    sqlite_storage: Storage, upstream: UpstreamProcess, tmp_path: Path
) -> None:
    with _free_socket() as unused:
        wrong = f"http://127.0.0.1:{unused.getsockname()[1]}"
        raw = _config_of(wrong, tmp_path, upstream.mcp_url)
        config_file = tmp_path / "gateway.yaml"
        config_file.write_text(yaml.safe_dump(raw))
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "doctor", "--config", str(config_file), stdout=asyncio.subprocess.PIPE
        )
        out, _ = await process.communicate()
    text = out.decode()
    assert process.returncode == 1
    assert f"FAIL  reachable: {wrong}/healthz is not reachable" in text
    assert "fix: start the gateway, or fix public_url" in text


async def test_doctor_names_an_upstream_that_is_down(
    sqlite_storage: Storage, upstream: UpstreamProcess, tmp_path: Path
) -> None:
    async with _good_gateway(sqlite_storage, upstream) as url:
        findings = await diagnose(parse_config(_config_of(url, tmp_path, UNUSED_UPSTREAM)), clock=SystemClock())
    assert _failed(findings).keys() == {"upstream"}
    assert "is not reachable from here" in _failed(findings)["upstream"]
    assert exit_status(findings) == 1


async def test_doctor_names_a_clock_minutes_away_from_the_gateways(
    sqlite_storage: Storage, upstream: UpstreamProcess, tmp_path: Path
) -> None:
    async with _good_gateway(sqlite_storage, upstream) as url:
        skewed = ManualClock(start=time.time() + 600)
        findings = await diagnose(parse_config(_config_of(url, tmp_path, upstream.mcp_url)), clock=skewed)
    assert _failed(findings).keys() == {"clock"}
    assert "differs from this machine's by about 10 min" in _failed(findings)["clock"]


async def test_doctor_says_metrics_are_open_to_the_world_without_a_token(
    sqlite_storage: Storage, upstream: UpstreamProcess, tmp_path: Path
) -> None:
    async with running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url) as handle:
        raw = _config_of(handle.url, tmp_path, upstream.mcp_url, metrics={"enabled": True})
        findings = await diagnose(parse_config(raw), clock=SystemClock())
    assert _failed(findings).keys() == {"metrics"}
    assert "open to anyone" in render(findings)


SITE_METADATA = {"issuer": "https://sso.example.com", "resource": "https://www.example.com"}


@contextlib.asynccontextmanager
async def _front_proxy(sock: socket.socket, target: list[str], *, well_known_elsewhere: bool) -> AsyncIterator[None]:
    """A front proxy that answers with its own ``Server`` header (as nginx does); with ``well_known_elsewhere`` it
    sends /.well-known/ to the company website (which has discovery documents of its own): a common way to break
    MCP discovery."""

    async def forward(request: web.Request) -> web.StreamResponse:
        if well_known_elsewhere and request.path.startswith("/.well-known/"):
            return web.json_response(SITE_METADATA)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with (
            aiohttp.ClientSession(auto_decompress=False) as session,
            session.request(
                request.method, target[0] + request.path_qs, headers=headers, data=await request.read()
            ) as answer,
        ):
            body = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP | {"server"}}
            kept["Server"] = "nginx"
            return web.Response(status=answer.status, headers=kept, body=body)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    try:
        yield
    finally:
        await runner.cleanup()


async def test_doctor_names_discovery_documents_a_front_proxy_sends_elsewhere(
    sqlite_storage: Storage, upstream: UpstreamProcess, tmp_path: Path
) -> None:
    target: list[str] = []
    with _free_socket() as proxy_sock:
        public_url = f"http://127.0.0.1:{proxy_sock.getsockname()[1]}"
        async with (
            _front_proxy(proxy_sock, target, well_known_elsewhere=True),
            running_gateway(
                storage=sqlite_storage,
                upstream_url=upstream.mcp_url,
                overrides={"public_url": public_url, "metrics": {"bearer_token": METRICS_TOKEN}},
            ) as handle,
        ):
            target.append(handle.url)
            config: GatewayConfig = parse_config(_config_of(public_url, tmp_path, upstream.mcp_url))
            findings = await diagnose(config, clock=SystemClock())
    failed = _failed(findings)
    assert failed.keys() == {"resource_metadata"}
    assert f"says resource 'https://www.example.com' but clients use '{public_url}/mcp'" in failed["resource_metadata"]
    assert exit_status(findings) == 1


async def test_doctor_finds_nothing_wrong_behind_a_front_proxy_that_replaces_the_server_header(
    sqlite_storage: Storage, upstream: UpstreamProcess, tmp_path: Path
) -> None:
    target: list[str] = []
    with _free_socket() as proxy_sock:
        public_url = f"http://127.0.0.1:{proxy_sock.getsockname()[1]}"
        async with (
            _front_proxy(proxy_sock, target, well_known_elsewhere=False),
            running_gateway(
                storage=sqlite_storage,
                upstream_url=upstream.mcp_url,
                overrides={"public_url": public_url, "metrics": {"bearer_token": METRICS_TOKEN}},
            ) as handle,
        ):
            target.append(handle.url)
            findings = await diagnose(
                parse_config(_config_of(public_url, tmp_path, upstream.mcp_url)), clock=SystemClock()
            )
    assert _failed(findings) == {}
