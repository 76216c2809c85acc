"""``mcp-gateway doctor``: check a deployment from outside (its public URL, as MCP clients see it) and from inside
(the upstream, the database and Redis, as the gateway sees them), and say what to change.

Each check yields ``Finding``s; a ``fail`` is something that stops clients from connecting or exposes the
deployment, a ``warn`` something that works but is risky. The command exits 1 when anything failed (and with
``--strict`` when anything warned), so it can gate a rollout in CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp

from gateway.clock import Clock
from gateway.config import GatewayConfig
from gateway.storage import open_storage
from gateway.storage.base import SchemaOutOfDate, StorageError

Level = Literal["ok", "warn", "fail"]
TIMEOUT = 5.0
DATE_HEADER_SLACK = 2.0
"""The HTTP ``Date`` header has a resolution of one second, and the request takes a while."""
_RESOURCE_METADATA = re.compile(r'resource_metadata="([^"]+)"')
_NETWORK_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)


@dataclass(frozen=True)
class Finding:
    check: str
    level: Level
    message: str
    fix: str = ""


@dataclass
class _Fetched:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _duration(seconds: float) -> str:
    seconds = abs(seconds)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _error_name(exc: BaseException) -> str:
    return type(exc).__name__


class Doctor:
    """Runs every check of one deployment; collaborators are passed in (the HTTP session, the clock)."""

    def __init__(self, config: GatewayConfig, *, session: aiohttp.ClientSession, clock: Clock) -> None:
        self.config = config
        self.session = session
        self.clock = clock
        self.findings: list[Finding] = []

    def _add(self, check: str, level: Level, message: str, fix: str = "") -> None:
        self.findings.append(Finding(check, level, message, fix))

    async def run(self) -> list[Finding]:
        self.check_public_url()
        reachable = await self.check_reachable()
        if reachable:
            await self.check_discovery()
            await self.check_metrics_exposure()
        await self.check_upstream()
        await self.check_storage()
        await self.check_redis()
        self.check_front_proxy()
        return self.findings

    async def _fetch(self, method: str, url: str, **kwargs: Any) -> _Fetched:
        async with asyncio.timeout(TIMEOUT):
            async with self.session.request(method, url, allow_redirects=False, **kwargs) as response:
                body = await response.content.read(1 << 20)
                return _Fetched(response.status, dict(response.headers), body)

    # -- outside: what clients see -------------------------------------------------------------------------

    def check_public_url(self) -> None:
        parts = urlsplit(self.config.public_url)
        host = parts.hostname or ""
        if parts.scheme == "https" or _is_loopback(host):
            self._add("public_url", "ok", f"{self.config.public_url} ({parts.scheme})")
            return
        self._add(
            "public_url",
            "fail",
            f"public_url {self.config.public_url} is plain http on a non-loopback host: passwords, codes and "
            "tokens would cross the network in clear, and MCP clients refuse such an authorization server",
            "serve the gateway over https (a TLS-terminating front proxy) and set public_url to the https URL",
        )

    async def check_reachable(self) -> bool:
        url = self.config.public_url + "/healthz"
        try:
            sent = self.clock.now()
            fetched = await self._fetch("GET", url)
            received = self.clock.now()
        except _NETWORK_ERRORS as exc:
            self._add(
                "reachable",
                "fail",
                f"{url} is not reachable ({_error_name(exc)})",
                "start the gateway, or fix public_url / the front proxy so that public_url reaches it",
            )
            return False
        if fetched.status != 200 or fetched.headers.get("Server") != "mcp-gateway":
            self._add(
                "reachable",
                "fail",
                f"{url} answered {fetched.status} but not as this gateway",
                "public_url must be the URL at which clients reach this gateway (check the front proxy's routes)",
            )
            return False
        self._add("reachable", "ok", f"{url} answers")
        self._check_date_header(fetched.headers.get("Date"), sent, received)
        return True

    def _check_date_header(self, value: str | None, sent: float, received: float) -> None:
        if not value:
            return
        try:
            their_time = email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            return
        allowance = self.config.security.max_clock_skew + DATE_HEADER_SLACK
        if sent - allowance <= their_time <= received + allowance:
            self._add("clock", "ok", "this machine's clock agrees with the gateway's")
            return
        self._add(
            "clock",
            "fail",
            f"the gateway's clock differs from this machine's by about {_duration(their_time - sent)} "
            f"(more than security.max_clock_skew, {self.config.security.max_clock_skew:g} s): tokens will be "
            "taken as expired or accepted too long",
            "run NTP (chrony, systemd-timesyncd) on every host",
        )

    async def check_discovery(self) -> None:
        """What MCP clients do: the 401 challenge, protected-resource metadata, authorization-server metadata."""
        public = self.config.public_url
        resource = public + "/mcp"
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        try:
            challenge = await self._fetch("POST", resource, data=json.dumps(ping), headers=headers)
        except _NETWORK_ERRORS as exc:
            self._add("challenge", "fail", f"POST {resource} failed ({_error_name(exc)})")
            return
        found = _RESOURCE_METADATA.search(challenge.headers.get("WWW-Authenticate", ""))
        if challenge.status != 401 or found is None:
            self._add(
                "challenge",
                "fail",
                f"POST {resource} without a credential answered {challenge.status} without an RFC 9728 "
                "challenge: clients cannot discover how to sign in",
                "make sure the front proxy passes /mcp and the WWW-Authenticate header through unchanged",
            )
            return
        metadata_url = found.group(1)
        if urlsplit(metadata_url).scheme not in ("http", "https") or _origin(metadata_url) != _origin(public):
            self._add("challenge", "fail", f"resource_metadata {metadata_url!r} is not an absolute URL on public_url")
            return
        self._add("challenge", "ok", f"401 names {metadata_url}")
        resource_path = urlsplit(resource).path
        well_known = _origin(public) + "/.well-known/oauth-protected-resource" + resource_path
        issuer = await self._check_prm(metadata_url, resource, "the challenge's resource_metadata")
        if well_known != metadata_url:
            await self._check_prm(well_known, resource, "RFC 9728's well-known URL")
        if issuer is not None:
            await self._check_as_metadata(issuer)

    async def _check_prm(self, url: str, resource: str, what: str) -> str | None:
        try:
            fetched = await self._fetch("GET", url)
            document = fetched.json() if fetched.status == 200 else None
        except (*_NETWORK_ERRORS, ValueError) as exc:
            self._add("resource_metadata", "fail", f"{what} {url}: {_error_name(exc)}")
            return None
        if not isinstance(document, dict):
            self._add(
                "resource_metadata",
                "fail",
                f"{what} {url} answered {fetched.status}: clients that look there find no metadata",
                f"route {urlsplit(url).path} on {_origin(url)} to the gateway's /.well-known/oauth-protected-resource"
                " (a front proxy that serves the gateway under a path must route the well-known paths too)",
            )
            return None
        if document.get("resource") != resource:
            self._add(
                "resource_metadata",
                "fail",
                f"{what} {url} says resource {document.get('resource')!r} but clients use {resource!r}: "
                "tokens will be refused for the wrong audience",
                "set public_url to the exact URL clients use (the front proxy must not rewrite the path prefix)",
            )
            return None
        servers = document.get("authorization_servers") or []
        self._add("resource_metadata", "ok", f"{what} {url} names resource {resource}")
        return str(servers[0]) if servers else None

    async def _check_as_metadata(self, issuer: str) -> None:
        path = urlsplit(issuer).path.rstrip("/")
        origin = _origin(issuer)
        # RFC 8414 §3.1 path insertion first, then the OIDC forms MCP 2025-11-25 clients also try.
        candidates = [
            origin + "/.well-known/oauth-authorization-server" + path,
            origin + "/.well-known/openid-configuration" + path,
            issuer.rstrip("/") + "/.well-known/openid-configuration",
        ]
        for url in candidates:
            try:
                fetched = await self._fetch("GET", url)
                document = fetched.json() if fetched.status == 200 else None
            except (*_NETWORK_ERRORS, ValueError):
                continue
            if not isinstance(document, dict):
                continue
            if document.get("issuer") != issuer:
                self._add(
                    "authorization_server",
                    "fail",
                    f"{url} says issuer {document.get('issuer')!r}, not {issuer!r}: clients must refuse it",
                    "set public_url to the exact URL clients use",
                )
                return
            if "S256" not in (document.get("code_challenge_methods_supported") or []):
                self._add("authorization_server", "fail", f"{url} does not list S256: MCP clients refuse it")
                return
            self._add("authorization_server", "ok", f"{url} (issuer {issuer})")
            return
        self._add(
            "authorization_server",
            "fail",
            f"no authorization-server metadata for issuer {issuer} at {', '.join(candidates)}",
            f"route {urlsplit(candidates[0]).path} on {origin} to the gateway's "
            "/.well-known/oauth-authorization-server",
        )

    async def check_metrics_exposure(self) -> None:
        if not self.config.metrics.enabled:
            return
        url = self.config.public_url + "/metrics"
        try:
            fetched = await self._fetch("GET", url)
        except _NETWORK_ERRORS:
            return
        if fetched.status == 200 and b"# HELP" in fetched.body:
            self._add(
                "metrics",
                "fail",
                f"{url} is open to anyone who can reach public_url",
                "set metrics.bearer_token (from ${ENV}) or block /metrics at the front proxy",
            )
            return
        self._add("metrics", "ok", f"{url} is not open ({fetched.status})")

    def check_front_proxy(self) -> None:
        host = urlsplit(self.config.public_url).hostname or ""
        if _is_loopback(host) or self.config.security.trusted_proxies:
            return
        self._add(
            "front_proxy",
            "warn",
            "security.trusted_proxies is empty: behind a load balancer every client shares its address, and so "
            "every per-address budget",
            "list the front proxy's addresses in security.trusted_proxies (it must append X-Forwarded-For)",
        )

    # -- inside: what the gateway depends on ---------------------------------------------------------------

    async def check_upstream(self) -> None:
        url = self.config.upstream.url
        initialize = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "mcp-gateway-doctor", "version": "1"},
            },
        }
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        try:
            fetched = await self._fetch("POST", url, data=json.dumps(initialize), headers=headers)
        except _NETWORK_ERRORS as exc:
            self._add(
                "upstream",
                "fail",
                f"the upstream {url} is not reachable from here ({_error_name(exc)})",
                "start the MCP server, or fix upstream.url",
            )
            return
        session_id = fetched.headers.get("Mcp-Session-Id")
        if session_id:
            with contextlib.suppress(*_NETWORK_ERRORS):  # closing the probe's session is a courtesy
                await self._fetch("DELETE", url, headers={"Mcp-Session-Id": session_id})
        result = _jsonrpc_result(fetched)
        if fetched.status != 200 or not isinstance(result, dict) or "protocolVersion" not in result:
            self._add(
                "upstream",
                "fail",
                f"the upstream {url} answered {fetched.status} to initialize, not as an MCP server",
                "upstream.url must be the MCP server's Streamable HTTP endpoint (often ending in /mcp)",
            )
            return
        server = result.get("serverInfo") or {}
        self._add("upstream", "ok", f"{url} speaks MCP ({server.get('name', 'unnamed')}, {result['protocolVersion']})")

    async def check_storage(self) -> None:
        config = self.config.storage
        if config.url.startswith("sqlite:///"):
            path = Path(config.url.removeprefix("sqlite:///"))
            if not await asyncio.to_thread(path.exists):
                self._add("storage", "fail", f"no database at {path}", "run mcp-gateway migrate --config ...")
                return
        storage = open_storage(
            config.url, pool_min=1, pool_max=1, search_path=config.schema, pgbouncer=config.pgbouncer
        )
        try:
            async with asyncio.timeout(TIMEOUT):
                await storage.open()
                try:
                    await storage.check_schema()
                    sent = self.clock.now()
                    server_time = await storage.ping()
                    received = self.clock.now()
                finally:
                    await storage.close()
        except SchemaOutOfDate:
            self._add("storage", "fail", "the schema is out of date", "run mcp-gateway migrate --config ...")
            return
        except (StorageError, OSError, TimeoutError) as exc:
            self._add("storage", "fail", f"the database is not reachable ({_error_name(exc)})", "check storage.url")
            return
        self._add("storage", "ok", "the database answers and its schema is current")
        allowance = self.config.security.max_clock_skew
        if server_time is not None and not sent - allowance <= server_time <= received + allowance:
            self._add(
                "clock",
                "fail",
                f"this machine's clock differs from the database's by about {_duration(server_time - sent)}; "
                "replicas this far off are taken out of rotation by /readyz",
                "run NTP (chrony, systemd-timesyncd) on every host",
            )

    async def check_redis(self) -> None:
        url = self.config.redis.url
        if url is None:
            return
        from redis.asyncio import Redis
        from redis.exceptions import RedisError

        client: Redis = Redis.from_url(url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            self._add("redis", "fail", f"Redis is not reachable ({_error_name(exc)})", "check redis.url")
            return
        finally:
            await client.aclose()
        self._add("redis", "ok", "Redis answers")


def _jsonrpc_result(fetched: _Fetched) -> Any:
    """The ``result`` of a JSON answer, or of the first SSE ``data:`` event."""
    text = fetched.body.decode("utf-8", "replace")
    if "text/event-stream" in fetched.headers.get("Content-Type", ""):
        data = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
        text = data[0] if data else ""
    try:
        message = json.loads(text)
    except ValueError:
        return None
    return message.get("result") if isinstance(message, dict) else None


SYMBOLS = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def render(findings: list[Finding]) -> str:
    lines = []
    for finding in findings:
        lines.append(f"{SYMBOLS[finding.level]}  {finding.check}: {finding.message}")
        if finding.fix and finding.level != "ok":
            lines.append(f"      fix: {finding.fix}")
    failed = sum(f.level == "fail" for f in findings)
    warned = sum(f.level == "warn" for f in findings)
    lines.append(f"{failed} failed, {warned} warnings" if failed or warned else "everything looks right")
    return "\n".join(lines)


def exit_status(findings: list[Finding], *, strict: bool = False) -> int:
    bad = {"fail", "warn"} if strict else {"fail"}
    return 1 if any(f.level in bad for f in findings) else 0


async def diagnose(
    config: GatewayConfig,
    *,
    clock: Clock,
    session_factory: Callable[[], aiohttp.ClientSession] = aiohttp.ClientSession,
) -> list[Finding]:
    async with session_factory() as session:
        return await Doctor(config, session=session, clock=clock).run()
