"""The README's first command: ``mcp-gateway quickstart`` gives a working MCP URL, login, dashboard and API key."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from pathlib import Path

import aiohttp

from tests.support.mcp_clients import streamable_session_client
from tests.support.replicas import free_port

START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


async def _read_banner(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    lines: list[str] = []
    while True:
        line = (await process.stdout.readline()).decode()
        if not line:
            raise AssertionError("quickstart exited before printing its banner:\n" + "".join(lines))
        lines.append(line)
        if "Press Ctrl-C to stop." in line:
            return "".join(lines)


async def test_quickstart_prints_a_working_mcp_url_api_key_and_dashboard_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "quickstart",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path / "data"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        banner = await asyncio.wait_for(_read_banner(process), START_TIMEOUT)
        mcp_url = re.search(r"MCP URL\s+(\S+)", banner)
        key = re.search(r"API key\s+(mgw_\w+)", banner)
        dashboard = re.search(r"Dashboard\s+(\S+)", banner)
        assert mcp_url, banner
        assert key, banner
        assert dashboard, banner
        assert mcp_url.group(1) == f"http://127.0.0.1:{port}/mcp"

        async with streamable_session_client(mcp_url.group(1), {"X-API-Key": key.group(1)}) as client:
            result = await client.call_tool("echo", {"text": "from the quick start"})
            assert "from the quick start" in str(result.content)
            seen = json.loads(str((await client.call_tool("whoami", {})).content[0].text))  # type: ignore[union-attr]
            assert seen["identity_token"]["verified"] is True, seen["identity_token"]

        async with aiohttp.ClientSession() as http:
            async with http.get(dashboard.group(1), allow_redirects=False) as page:
                assert page.status == 303
                assert page.headers["Location"] == "/account/login"
            async with http.post(mcp_url.group(1), json={"jsonrpc": "2.0", "id": 1, "method": "ping"}) as anonymous:
                assert anonymous.status == 401
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
    assert code == 0
