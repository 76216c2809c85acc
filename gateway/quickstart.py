"""``mcp-gateway quickstart``: the example upstream and the gateway on the embedded default, one command.

Starts ``upstream_mcp`` on a free port, migrates a SQLite database under ``--data-dir``, makes sure a
login exists (a fresh password each run) and mints an API key, prints what a new user needs, and serves
until interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from gateway.app import create_app
from gateway.config import GatewayConfig, parse_config
from gateway.identity.sealing import generate_secret
from gateway.server import serve

QUICKSTART_EMAIL = "you@example.com"
READY_PREFIX = "upstream_mcp listening on "
READY_TIMEOUT = 30.0


@contextlib.asynccontextmanager
async def upstream_process(gateway_url: str | None = None) -> AsyncIterator[str]:
    """Run ``python -m upstream_mcp --port 0`` (verifying the identity JWTs of the gateway at ``gateway_url``);
    yields its base URL."""
    verify = [] if gateway_url is None else ["--identity-jwks", f"{gateway_url}/.well-known/jwks.json"]
    verify += [] if gateway_url is None else ["--identity-issuer", gateway_url]
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "upstream_mcp", "--host", "127.0.0.1", "--port", "0", *verify),
        stdout=asyncio.subprocess.PIPE,
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
            "identity": {"encryption_keys": _encryption_key(data_dir)},
            "logging": {"format": "text", "level": "WARNING"},
        }
    )


def _encryption_key(data_dir: Path) -> str:
    """The key that seals the identity signing keys: made once, kept beside the database, readable by its owner only
    (a production deployment passes ``identity.encryption_keys`` from a secret store instead)."""
    path = data_dir / "identity-encryption.key"
    if not path.exists():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(generate_secret() + "\n")
    return path.read_text().strip()


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
    async with upstream_process(f"http://127.0.0.1:{port}") as upstream:
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
