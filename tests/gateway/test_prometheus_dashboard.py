"""A real Prometheus (Debian's ``prometheus``) scrapes a gateway through a full client life; every PromQL expression of
the Grafana dashboard is then evaluated against it with ``promtool query instant`` (each returns data, none errors),
and ``promtool check metrics`` accepts the exposition. Missing binaries fail the test under CI=true."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from gateway.clock import ManualClock
from gateway.metrics import Metrics
from gateway.storage import Storage
from tests.support.gateway import running_gateway
from tests.support.observed_flow import EMAIL, run_observed_flow, scrape
from tests.support.upstream import UpstreamProcess

DASHBOARD = Path(__file__).parent.parent.parent / "config" / "grafana" / "mcp-gateway.json"
_SUFFIXES = re.compile(r"_(total|bucket|count|sum|created)$")

pytestmark = pytest.mark.prometheus


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def binaries() -> tuple[str, str]:
    found = shutil.which("prometheus"), shutil.which("promtool")
    if None in found:
        message = "prometheus/promtool not installed (apt-get install --no-install-recommends prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found  # type: ignore[return-value]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run(*argv: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await process.communicate(stdin)
    return process.returncode or 0, out.decode(), err.decode()


@asynccontextmanager
async def prometheus(binary: str, target: str, tmp_path: Path) -> AsyncIterator[str]:
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: gateway\n    metrics_path: /metrics\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    process = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        async with asyncio.timeout(30):
            await process.wait()


async def instant(server: str, expr: str) -> list[object]:
    """The query's result through the HTTP API; empty while Prometheus is still starting."""
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(server + "/api/v1/query", params={"query": expr}) as response,
        ):
            if response.status != 200:
                return []
            result: list[object] = (await response.json())["data"]["result"]
            return result
    except aiohttp.ClientConnectionError:
        return []


async def until_answered(server: str, expressions: list[str], seconds: float) -> None:
    """Wait (bounded) until each expression has data: the first scrapes, then two after the flow for rate()."""
    async with asyncio.timeout(seconds):
        for expr in expressions:
            while not await instant(server, expr):
                await asyncio.sleep(0.25)


def test_the_dashboard_uses_exactly_the_gateway_series():
    used = {_SUFFIXES.sub("", name) for expr in dashboard_expressions() for name in re.findall(r"gateway_\w+", expr)}
    exported = {metric.name for metric in Metrics().registry.collect()}
    assert used <= exported, used - exported
    assert exported == used


async def test_a_real_prometheus_scrapes_a_full_flow_and_every_dashboard_expression_returns_data(
    sqlite_storage: Storage, upstream: UpstreamProcess, tmp_path: Path
):
    prometheus_binary, promtool = binaries()
    clock = ManualClock(start=1_900_000_000.0)
    async with running_gateway(storage=sqlite_storage, upstream_url=upstream.mcp_url, clock=clock) as gw:
        target = gw.url.removeprefix("http://")
        async with prometheus(prometheus_binary, target, tmp_path) as server:
            await until_answered(server, ['up{job="gateway"} == 1'], 60)
            user = await gw.new_user(EMAIL)
            await run_observed_flow(gw.url, clock, lambda: gw.new_key(user))
            await until_answered(server, ['gateway_revocations_total{source="rfc7009"} == 1'], 30)
            expressions = dashboard_expressions()
            await until_answered(server, expressions, 30)
            answers = {expr: await run(promtool, "query", "instant", server, expr) for expr in expressions}
            exposition = await scrape(gw.url)
    for expr, (code, out, err) in answers.items():
        assert code == 0, (expr, err)
        assert "=>" in out, (expr, out, err)
    code, out, err = await run(promtool, "check", "metrics", stdin=exposition.encode())
    assert code == 0, out + err
    assert out.strip() == "", out
