"""``mcp-gateway quickstart``: the example upstream and the gateway on the embedded default, one command.

Starts ``upstream_mcp`` on a free port, migrates a SQLite database under ``--data-dir``, makes sure a
login exists (a fresh password each run) and mints an API key, prints what a new user needs, and serves
until interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from gateway.app import create_app
from gateway.config import GatewayConfig, parse_config
from gateway.server import serve

QUICKSTART_EMAIL = "you@example.com"
READY_PREFIX = "upstream_mcp listening on "
READY_TIMEOUT = 30.0


@contextlib.asynccontextmanager
async def upstream_process() -> AsyncIterator[str]:
    """Run ``python -m upstream_mcp --port 0``; yields its base URL."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "upstream_mcp", "--host", "127.0.0.1", "--port", "0", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(READY_TIMEOUT):
            while True:
                line = (await process.stdout.readline()).decode()
                if not line:
                    raise RuntimeError("the example upstream exited before it was ready")
                if line.startswith(READY_PREFIX):
                    break
        yield line[len(READY_PREFIX) :].strip()
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


def quickstart_config(port: int, upstream: str, data_dir: Path) -> GatewayConfig:
    return parse_config(
        {
            "public_url": f"http://127.0.0.1:{port}",
            "server": {"host": "127.0.0.1", "port": port},
            "upstream": {"url": f"{upstream}/mcp", "sse_url": f"{upstream}/sse"},
            "storage": {"url": f"sqlite:///{data_dir / 'gateway.db'}"},
            "logging": {"format": "text", "level": "WARNING"},
        }
    )


async def prepare_login(config: GatewayConfig) -> tuple[str, str]:
    """Migrate, ensure the quick-start user has a fresh password, mint a key. Returns (password, key)."""
    from gateway.cli import accounts_for, opened_storage

    async with opened_storage(config, check=False) as storage:
        await storage.migrate()
        accounts = accounts_for(config, storage)
        password = secrets.token_urlsafe(12)
        user = await storage.get_user_by_email(QUICKSTART_EMAIL)
        if user is None:
            user = await accounts.create_user(QUICKSTART_EMAIL, password)
        else:
            await accounts.set_password(user, password)
        now = accounts.clock.now()
        for old in await storage.list_api_keys(user.id):
            if old.name == "quickstart":
                await storage.revoke_api_key(old.id, now=now)
        _, minted = await accounts.create_key(user, name="quickstart")
    return password, minted.key


def _make_dir(data_dir: str) -> Path:
    directory = Path(data_dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    return directory


async def run_quickstart(port: int, data_dir: str) -> None:
    directory = await asyncio.to_thread(_make_dir, data_dir)
    async with upstream_process() as upstream:
        config = quickstart_config(port, upstream, directory)
        password, key = await prepare_login(config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with serve(create_app(config), "127.0.0.1", port):
            mcp_url = f"{config.public_url}/mcp"
            print(
                f"""
MCP gateway is running, in front of the example upstream at {upstream}/mcp

  MCP URL        {mcp_url}
  Legacy SSE     {mcp_url}/sse
  Browser login  {QUICKSTART_EMAIL} / {password}
  Dashboard      {config.public_url}/account  (Authorized Apps, API keys, usage)
  API key        {key}

Add it to Claude Code, signing in through the browser (OAuth):
  claude mcp add --transport http gateway {mcp_url}
or with the API key instead:
  claude mcp add --transport http gateway {mcp_url} --header "X-API-Key: {key}"

Or with the MCP Inspector: npx @modelcontextprotocol/inspector  (URL {mcp_url})

Data lives in {directory}. Press Ctrl-C to stop.
""",
                flush=True,
            )
            await stop.wait()
