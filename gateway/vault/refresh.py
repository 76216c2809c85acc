"""OAuth 2.0 refresh (RFC 6749 §6) of a connection's access token at its provider's token endpoint.

``invalid_grant`` (and ``unauthorized_client``) mean the grant is gone (revoked, rotated twice, expired):
``RefreshRefused``, the connection must be reconnected. Anything else (network, 5xx, a malformed answer) is
``RefreshUnavailable``: transient, the connection stays as it is.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp

from gateway.identity.provider_http import ProviderError
from gateway.identity.providers import ProviderClient

REFRESH_TIMEOUT = 10.0
MAX_ANSWER_BYTES = 256 * 1024
_GRANT_GONE = frozenset({"invalid_grant", "unauthorized_client"})


class RefreshRefused(Exception):
    """The provider refused the refresh token for good."""


class RefreshUnavailable(Exception):
    """The refresh failed transiently (the message names no token)."""


class TokenEndpoint(Protocol):
    async def refresh(self, refresh_token: str) -> Mapping[str, Any]:
        """The provider's token response, or ``RefreshRefused`` / ``RefreshUnavailable``."""
        ...


class ProviderTokenEndpoint:
    """The token endpoint of one configured provider (discovered through its ``ProviderClient``)."""

    def __init__(self, client: ProviderClient, session: aiohttp.ClientSession) -> None:
        self._client = client
        self._session = session

    async def refresh(self, refresh_token: str) -> Mapping[str, Any]:
        try:
            endpoint = (await self._client.metadata()).token_endpoint
        except ProviderError as exc:
            raise RefreshUnavailable(f"provider metadata: {exc.code}") from exc
        config = self._client.config
        # RFC 6749 §2.3.1: client id and secret form-urlencoded, then base64.
        pair = f"{quote(config.client_id, safe='')}:{quote(config.client_secret, safe='')}"
        headers = {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode(), "Accept": "application/json"}
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        try:
            async with self._session.post(
                endpoint,
                data=form,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=REFRESH_TIMEOUT),
            ) as response:
                raw = await response.content.read(MAX_ANSWER_BYTES + 1)
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RefreshUnavailable(f"token endpoint: {type(exc).__name__}") from exc
        try:
            body = json.loads(raw) if len(raw) <= MAX_ANSWER_BYTES else None
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if (400 <= status < 500 and error in _GRANT_GONE) or (status == 200 and error in _GRANT_GONE):
            raise RefreshRefused(str(error))  # GitHub answers errors with 200
        if status != 200 or not isinstance(body, dict) or error is not None:
            raise RefreshUnavailable(f"token endpoint: HTTP {status}")
        return body
