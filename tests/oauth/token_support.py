"""Test helpers for the token and revocation endpoints: a gateway on a real socket, seeded codes, form posts."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from gateway.accounts import Accounts
from gateway.apikeys import ApiKeyFormat
from gateway.clock import ManualClock
from gateway.config import GatewayConfig
from gateway.oauth.context import REVOKE_PATH, TOKEN_PATH
from gateway.oauth.pkce import s256
from gateway.oauth.token_endpoint import GRANTS, USERS
from gateway.oauth.token_formats import TokenType, mint
from gateway.passwords import Passwords
from gateway.storage import Storage, StorageUnavailable
from gateway.storage.base import User
from gateway.storage.oauth import AuthorizationCode, GrantStore
from tests.support.gateway import FAST_ARGON2, TEST_PASSWORD, UNUSED_UPSTREAM, running_gateway

CLIENT_A = "client-a"
CLIENT_B = "client-b"
REDIRECT_URI = "http://127.0.0.1:43123/callback"
VERIFIER = "v" * 20 + "-._~" + "0123456789abcdefghijklmnopqrstuvwxyz"
CHALLENGE = s256(VERIFIER)
FORM = "application/x-www-form-urlencoded"

FormData = Mapping[str, str] | Sequence[tuple[str, str]] | str | bytes


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value

    @property
    def error(self) -> str | None:
        return self.json().get("error") if self.body else None


@dataclass
class OAuthGateway:
    url: str
    config: GatewayConfig
    app: web.Application
    storage: Storage
    clock: ManualClock
    http: aiohttp.ClientSession
    _users: list[int] = field(default_factory=lambda: [0])

    @property
    def token_url(self) -> str:
        return self.url + TOKEN_PATH

    @property
    def revoke_url(self) -> str:
        return self.url + REVOKE_PATH

    @property
    def resource(self) -> str:
        return self.config.mcp_resource

    def accounts(self) -> Accounts:
        return Accounts(
            users=self.storage,
            keys=self.storage,
            passwords=Passwords(hasher=FAST_ARGON2),
            key_format=ApiKeyFormat(self.config.api_keys.prefix),
            clock=self.clock,
        )

    async def new_user(self) -> User:
        self._users[0] += 1
        return await self.accounts().create_user(f"token-user{self._users[0]}@example.com", TEST_PASSWORD)

    async def seed_code(
        self,
        user: User,
        *,
        client_id: str = CLIENT_A,
        redirect_uri: str = REDIRECT_URI,
        redirect_uri_given: bool = True,
        challenge: str = CHALLENGE,
        scope: str = "mcp:tools",
    ) -> str:
        """Store a code as the authorize endpoint would, and return it."""
        code, code_hash = mint(TokenType.CODE)
        now = self.clock.now()
        await self.storage.create_code(
            AuthorizationCode(
                code_hash=code_hash,
                client_id=client_id,
                user_id=user.id,
                redirect_uri=redirect_uri,
                redirect_uri_given=redirect_uri_given,
                code_challenge=challenge,
                scope=scope,
                resource=self.resource,
                created_at=now,
                expires_at=now + self.config.oauth.code_ttl,
            )
        )
        return code

    async def post(self, url: str, data: FormData, *, headers: Mapping[str, str] | None = None) -> Reply:
        all_headers = {"Content-Type": FORM, **(headers or {})}
        body: Any = data.encode() if isinstance(data, str) else data
        if isinstance(body, bytes) and len(body) > 64 * 1024:
            body = io.BytesIO(body)  # aiohttp warns about large raw bodies
        async with self.http.post(url, data=body, headers=all_headers) as response:
            return Reply(response.status, dict(response.headers), await response.read())

    async def exchange(self, code: str, **params: str | None) -> Reply:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": CLIENT_A,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": VERIFIER,
            **params,
        }
        return await self.post(self.token_url, {k: v for k, v in form.items() if v is not None})

    async def refresh(self, refresh_token: str, **params: str | None) -> Reply:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": CLIENT_A, **params}
        return await self.post(self.token_url, {k: v for k, v in form.items() if v is not None})

    async def revoke(self, token: str, **params: str | None) -> Reply:
        form = {"token": token, "client_id": CLIENT_A, **params}
        return await self.post(self.revoke_url, {k: v for k, v in form.items() if v is not None})

    async def tokens(self, user: User | None = None, **code_args: Any) -> dict[str, Any]:
        """A fresh code flow's token response (a new user unless given)."""
        code = await self.seed_code(user or await self.new_user(), **code_args)
        reply = await self.exchange(code)
        assert reply.status == 200, reply.body
        return reply.json()


@contextlib.asynccontextmanager
async def oauth_gateway(
    storage: Storage,
    clock: ManualClock,
    *,
    grants: GrantStore | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> AsyncIterator[OAuthGateway]:
    """A gateway with the token and revocation endpoints on a real socket; ``grants`` replaces the store
    the endpoints use (a failing wrapper, say)."""

    def prepare(app: web.Application) -> None:
        app[GRANTS] = grants if grants is not None else storage
        app[USERS] = storage

    async with (
        running_gateway(
            storage=storage, upstream_url=UNUSED_UPSTREAM, overrides=overrides, clock=clock, prepare=prepare
        ) as running,
        aiohttp.ClientSession() as http,
    ):
        yield OAuthGateway(
            url=running.url, config=running.config, app=running.app, storage=storage, clock=clock, http=http
        )


class UnavailableOnWrite:
    """A ``GrantStore`` that reads through to a real one and raises ``StorageUnavailable`` on revocation and
    redemption writes, as a database refusing writes would."""

    def __init__(self, inner: GrantStore) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name in ("revoke_family", "revoke_access_token", "redeem_code", "rotate_refresh_token"):

            async def refuse(*args: Any, **kwargs: Any) -> Any:
                raise StorageUnavailable("the database refuses writes")

            return refuse
        return getattr(self._inner, name)
