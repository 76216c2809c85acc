"""What every check of ``mcp-gateway doctor`` shares: a finding, the HTTP fetch, small helpers."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp

from gateway.clock import Clock
from gateway.config import GatewayConfig

Level = Literal["ok", "warn", "fail"]
TIMEOUT = 5.0
DATE_HEADER_SLACK = 2.0
"""The HTTP ``Date`` header has a resolution of one second, and the request takes a while."""
RESOURCE_METADATA = re.compile(r'resource_metadata="([^"]+)"')
NETWORK_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)


@dataclass(frozen=True)
class Finding:
    check: str
    level: Level
    message: str
    fix: str = ""


@dataclass
class Fetched:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def duration(seconds: float) -> str:
    seconds = abs(seconds)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def error_name(exc: BaseException) -> str:
    return type(exc).__name__


class Checks:
    """The state of one run: the deployment, collaborators passed in (the HTTP session, the clock), findings."""

    def __init__(self, config: GatewayConfig, *, session: aiohttp.ClientSession, clock: Clock) -> None:
        self.config = config
        self.session = session
        self.clock = clock
        self.findings: list[Finding] = []

    def _add(self, check: str, level: Level, message: str, fix: str = "") -> None:
        self.findings.append(Finding(check, level, message, fix))

    async def _fetch(self, method: str, url: str, **kwargs: Any) -> Fetched:
        async with asyncio.timeout(TIMEOUT):
            async with self.session.request(method, url, allow_redirects=False, **kwargs) as response:
                body = await response.content.read(1 << 20)
                return Fetched(response.status, dict(response.headers), body)
