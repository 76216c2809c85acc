"""An app in front of a real gateway and the real OpenID provider: it holds an API key with callback URLs and
drives the app flow over HTTP (initiate → the provider's pages → the gateway's callback → code → tokens)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import jwt

from gateway.secrets_hashing import secret_hash
from gateway.storage.app_flow import KeyApp
from gateway.storage.base import User
from tests.support.gateway import GatewayHandle
from tests.support.oidc import OidcProvider, sign_in

PUBLIC_URL = "http://127.0.0.1:8080"
"""The gateway's public URL: its callback (``/v1/auth/test/callback``) is the one registered at the provider."""
APP_CALLBACK = "https://app.example/callback"
CLAIMS = {"iss", "sub", "aud", "exp", "iat", "jti", "api_key_id", "connected_services"}


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


@dataclass
class App:
    gateway: GatewayHandle
    idp: OidcProvider
    key: str
    key_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}

    async def initiate(self, redirect_uri: str = APP_CALLBACK, **params: str) -> aiohttp.ClientResponse:
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{self.gateway.url}/v1/auth/test/initiate",
                params={"redirect_uri": redirect_uri, **params},
                headers=self.headers,
                allow_redirects=False,
            ) as response,
        ):
            await response.read()
            return response

    async def provider_callback(self, *, login: str = "alice", approve: bool = True, **params: str) -> str:
        """Initiate, sign in at the provider; the gateway callback URL the provider sends the browser to."""
        started = await self.initiate(**params)
        assert started.status == 302, await started.text()
        back = await sign_in(self.idp, started.headers["Location"], login=login, approve=approve)
        assert back.startswith(PUBLIC_URL + "/v1/auth/test/callback?")
        return self.gateway.url + back.removeprefix(PUBLIC_URL)

    async def follow_callback(self, callback_url: str) -> aiohttp.ClientResponse:
        async with aiohttp.ClientSession() as http, http.get(callback_url, allow_redirects=False) as response:
            await response.read()
            return response

    async def code(self, **params: str) -> str:
        """The whole browser part: the one-time code the app's callback receives."""
        response = await self.follow_callback(await self.provider_callback(**params))
        assert response.status == 302, await response.text()
        location = response.headers["Location"]
        assert location.startswith(APP_CALLBACK + "?")
        return query(location)["code"]

    async def post(self, path: str, form: dict[str, str], headers: dict[str, str] | None = None) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{self.gateway.url}{path}", data=form, headers=self.headers if headers is None else headers
            ) as response,
        ):
            text = await response.text()
            return response.status, json.loads(text) if text else None

    async def exchange(self, code: str, redirect_uri: str = APP_CALLBACK) -> tuple[int, Any]:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        return await self.post("/v1/auth/token", form)

    async def refresh(self, refresh_token: str) -> tuple[int, Any]:
        return await self.post("/v1/auth/token", {"grant_type": "refresh_token", "refresh_token": refresh_token})

    async def tokens(self) -> dict[str, Any]:
        status, body = await self.exchange(await self.code())
        assert status == 200, body
        return dict(body)


async def new_app(
    gateway: GatewayHandle,
    idp: OidcProvider,
    owner: User | None = None,
    redirect_uris: tuple[str, ...] = (APP_CALLBACK,),
    *,
    tokens_in_url: bool = False,
) -> App:
    owner = owner or await gateway.new_user()
    key = await gateway.new_key(owner, name="app")
    row = await gateway.storage.get_api_key_by_hash(secret_hash(key))
    assert row is not None
    await gateway.storage.set_key_app(KeyApp(row.id, redirect_uris, tokens_in_url))
    return App(gateway, idp, key, row.id)


async def verify_with_pyjwt(gateway: GatewayHandle, token: str) -> dict[str, Any]:
    """PyJWT (not the gateway's JOSE library) against the key set fetched from ``/.well-known/jwks.json``."""
    async with aiohttp.ClientSession() as http, http.get(f"{gateway.url}/.well-known/jwks.json") as response:
        jwks = json.loads(await response.text())
    kid = jwt.get_unverified_header(token)["kid"]
    key = {k.key_id: k for k in jwt.PyJWKSet.from_dict(jwks).keys}[kid]
    claims: dict[str, Any] = jwt.decode(
        token,
        key.key,
        algorithms=["ES256"],
        audience="mcp-servers",
        issuer=PUBLIC_URL,
        options={"require": sorted(CLAIMS - {"api_key_id", "connected_services"})},
    )
    return claims
