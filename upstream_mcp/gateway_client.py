"""Calling a user's connected service through the gateway (``/v1/proxy/SERVICE/PATH``) from a tool.

The tool never holds the user's provider token, nor an app's key: it has its own service key
(``--gateway-key`` / ``UPSTREAM_GATEWAY_KEY``, a key of the operator's service account, role ``admin``) and the
identity JWT the gateway sent with the call (``X-MCP-Identity``). That JWT's audience is this upstream, so the
proxy would refuse it; the tool trades it at the gateway for a short identity token bound to its own key (RFC 8693
token exchange at ``POST /v1/auth/token``), then calls the proxy with both.

When the user has not connected the service (or must reconnect it), the tool answers with MCP's URL-mode
elicitation (``-32042``) naming ``<gateway public URL>/account/connect/SERVICE?for=USER``: a page only that
user, signed in, can use. The URL carries no secret.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 (a URN)
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
TIMEOUT = 30.0
MAX_ANSWER = 1024 * 1024


class GatewayCallError(Exception):
    """The gateway refused or failed; ``error`` is its JSON error code (never a token)."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{status} {error}: {description}")
        self.status = status
        self.error = error
        self.description = description


class NotConnected(Exception):
    """The user has not connected ``service`` (or must reconnect it): ``connect_url`` is where to do it."""

    def __init__(self, service: str, connect_url: str, reconnect: bool) -> None:
        super().__init__(f"{service} is not connected")
        self.service = service
        self.connect_url = connect_url
        self.reconnect = reconnect


def _subject(jwt: str) -> str:
    """The ``sub`` of a JWT the gateway just issued us (over its own connection): used only to build a URL."""
    try:
        segment = jwt.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
        return str(claims["sub"])
    except (IndexError, KeyError, ValueError) as exc:
        raise GatewayCallError(502, "invalid_token", "the gateway's token is malformed") from exc


@dataclass(frozen=True)
class GatewayClient:
    url: str
    """Where this server reaches the gateway."""
    key: str
    public_url: str | None = None
    """The gateway's public URL (for connect links shown to people); default: ``url``."""

    async def _json(self, response: aiohttp.ClientResponse) -> dict[str, Any]:
        raw = await response.content.read(MAX_ANSWER)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        return body if isinstance(body, dict) else {}

    async def exchange(self, http: aiohttp.ClientSession, identity_jwt: str) -> str:
        form = {"grant_type": TOKEN_EXCHANGE, "subject_token": identity_jwt, "subject_token_type": JWT_TYPE}
        async with http.post(f"{self.url}/v1/auth/token", data=form, headers={"X-API-Key": self.key}) as response:
            body = await self._json(response)
            if response.status != 200 or not isinstance(body.get("access_token"), str):
                raise GatewayCallError(
                    response.status, str(body.get("error", "error")), str(body.get("error_description", ""))
                )
            return str(body["access_token"])

    async def get(self, identity_jwt: str, service: str, path: str) -> Any:
        """``GET /v1/proxy/SERVICE/PATH`` for the user of ``identity_jwt``: the provider's JSON answer."""
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            token = await self.exchange(http, identity_jwt)
            headers = {"X-API-Key": self.key, "Authorization": f"Bearer {token}", "Accept": "application/json"}
            target = f"{self.url}/v1/proxy/{quote(service, safe='')}/{path.lstrip('/')}"
            async with http.get(target, headers=headers, allow_redirects=False) as response:
                body = await self._json(response)
                error = str(body.get("error", ""))
                if error in ("service_not_connected", "service_reconnect_required"):
                    base = (self.public_url or self.url).rstrip("/")
                    link = f"{base}/account/connect/{quote(service, safe='')}?for={quote(_subject(token), safe='')}"
                    raise NotConnected(service, link, reconnect=error == "service_reconnect_required")
                if response.status != 200:
                    raise GatewayCallError(response.status, error or "error", str(body.get("error_description", "")))
                return body
