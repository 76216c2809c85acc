"""The inside checks of ``mcp-gateway doctor``: what the gateway depends on (upstream, database, Redis, clock)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

from gateway.doctor.base import NETWORK_ERRORS, TIMEOUT, Checks, Fetched, duration, error_name
from gateway.storage import open_storage
from gateway.storage.base import SchemaOutOfDate, StorageError


class InsideChecks(Checks):
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
        except NETWORK_ERRORS as exc:
            self._add(
                "upstream",
                "fail",
                f"the upstream {url} is not reachable from here ({error_name(exc)})",
                "start the MCP server, or fix upstream.url",
            )
            return
        session_id = fetched.headers.get("Mcp-Session-Id")
        if session_id:
            with contextlib.suppress(*NETWORK_ERRORS):  # closing the probe's session is a courtesy
                await self._fetch("DELETE", url, headers={"Mcp-Session-Id": session_id})
        if fetched.status in (401, 403):
            self._add(
                "upstream",
                "warn",
                f"the upstream {url} answered {fetched.status}: it is reachable but wants a credential (the "
                "gateway's signed identity, which this check does not send)",
                "nothing, if the upstream verifies the gateway's identity JWT; otherwise check its own auth",
            )
            return
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
            self._add("storage", "fail", f"the database is not reachable ({error_name(exc)})", "check storage.url")
            return
        except Exception as exc:  # a driver error: wrong database, role or password (never printed with the URL)
            self._add(
                "storage", "fail", f"the database refused the connection ({error_name(exc)})", "check storage.url"
            )
            return
        self._add("storage", "ok", "the database answers and its schema is current")
        allowance = self.config.security.max_clock_skew
        if server_time is not None and not sent - allowance <= server_time <= received + allowance:
            self._add(
                "clock",
                "fail",
                f"this machine's clock differs from the database's by about {duration(server_time - sent)}; "
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
            self._add("redis", "fail", f"Redis is not reachable ({error_name(exc)})", "check redis.url")
            return
        finally:
            await client.aclose()
        self._add("redis", "ok", "Redis answers")


def _jsonrpc_result(fetched: Fetched) -> Any:
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
