"""Identity tokens and the JWKS, through a running gateway: a token verifies with an independent JOSE library
(PyJWT) against the key set fetched over HTTP; after a rotation an old token verifies until it expires, then its
key leaves the key set."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from gateway.clock import ManualClock
from gateway.config import parse_config
from gateway.identity.sealing import generate_secret
from gateway.identity.signing_keys import REFRESH_GUARD, SigningUnavailable
from gateway.identity.tokens import IDENTITY_TOKEN_LIFETIME, InvalidIdentityToken
from gateway.identity.web import IDENTITY, identity_services
from gateway.storage import Storage, StorageUnavailable
from gateway.storage.identity import StoredSigningKey
from gateway.storage.sqlite import SqliteStorage
from tests.support.gateway import UNUSED_UPSTREAM, GatewayHandle, running_gateway

NOT_ON_SYSTEM_CLOCK = {"verify_exp": False, "verify_iat": False}
CLAIMS = {"iss", "sub", "aud", "exp", "iat", "jti", "api_key_id", "connected_services"}


@pytest.fixture
async def identity_gateway(sqlite_storage: Storage, clock: ManualClock) -> AsyncIterator[GatewayHandle]:
    overrides = {"identity": {"encryption_keys": f"{generate_secret('k2')},{generate_secret('k1')}"}}
    async with running_gateway(
        storage=sqlite_storage, upstream_url=UNUSED_UPSTREAM, clock=clock, overrides=overrides
    ) as gateway:
        yield gateway


async def fetch_jwks(gateway: GatewayHandle) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{gateway.url}/.well-known/jwks.json") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/jwk-set+json")
        assert "max-age" in response.headers["Cache-Control"]
        body: dict[str, Any] = json.loads(await response.text())
    return body


def verify_with_pyjwt(token: str, jwks: dict[str, Any], gateway: GatewayHandle, *, at: float) -> dict[str, Any]:
    """PyJWT, not the gateway's JOSE library: the key by ``kid`` from the fetched set, ES256 only; ``exp``
    ``iat`` checked against the test's clock (PyJWT reads the system clock; it checks everything else)."""
    kid = jwt.get_unverified_header(token)["kid"]
    keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(jwks).keys}
    if kid not in keys:
        raise LookupError(f"kid {kid} is not in the JWKS")
    claims: dict[str, Any] = jwt.decode(
        token,
        keys[kid].key,
        algorithms=["ES256"],
        audience="mcp-servers",
        issuer=gateway.config.public_url,
        options={
            "require": sorted(CLAIMS - {"connected_services", "api_key_id"}),
            "verify_exp": False,
            "verify_iat": False,
        },
    )
    if not claims["iat"] <= at:
        raise jwt.ImmatureSignatureError("issued after the test's clock")
    if at >= claims["exp"]:
        raise jwt.ExpiredSignatureError("expired at the test's clock")
    return claims


async def test_an_identity_token_has_exactly_the_promised_claims_and_verifies_with_pyjwt_against_the_jwks(
    identity_gateway: GatewayHandle, clock: ManualClock
) -> None:
    tokens = identity_gateway.app[IDENTITY].tokens
    published_at_start = await fetch_jwks(identity_gateway)  # the first key exists before the first token
    token = await tokens.mint(subject="usr_123", api_key_id="key_456")
    assert [k["kid"] for k in published_at_start["keys"]] == [jwt.get_unverified_header(token)["kid"]]
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    claims = verify_with_pyjwt(token, await fetch_jwks(identity_gateway), identity_gateway, at=clock.now())
    assert set(claims) == CLAIMS
    assert claims["iss"] == identity_gateway.config.public_url
    assert (claims["sub"], claims["aud"], claims["api_key_id"]) == ("usr_123", "mcp-servers", "key_456")
    assert claims["connected_services"] == []
    assert claims["exp"] - claims["iat"] == IDENTITY_TOKEN_LIFETIME == 3600
    assert (
        claims["jti"]
        != jwt.decode(await tokens.mint(subject="usr_123", api_key_id="key_456"), options={"verify_signature": False})[
            "jti"
        ]
    )
    assert await tokens.verify(token) == claims
    jwks = await fetch_jwks(identity_gateway)
    assert [k["kid"] for k in jwks["keys"]] == [header["kid"]]
    assert all("d" not in k for k in jwks["keys"])
    assert jwks["keys"][0]["alg"] == "ES256"


async def test_after_rotation_an_old_token_verifies_until_it_expires_and_then_its_key_leaves_the_jwks(
    identity_gateway: GatewayHandle, clock: ManualClock
) -> None:
    services = identity_gateway.app[IDENTITY]
    old_token = await services.tokens.mint(subject="usr_1", api_key_id="key_1")
    old_kid = jwt.get_unverified_header(old_token)["kid"]

    new_kid, _ = await services.keys.rotate()
    clock.advance(services.keys.cache_seconds)  # every replica has picked the new key up
    new_token = await services.tokens.mint(subject="usr_1", api_key_id="key_1")
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid != old_kid

    clock.advance(IDENTITY_TOKEN_LIFETIME - services.keys.cache_seconds - 1)  # the old token's last second
    jwks = await fetch_jwks(identity_gateway)
    assert {k["kid"] for k in jwks["keys"]} == {old_kid, new_kid}
    verify_with_pyjwt(old_token, jwks, identity_gateway, at=clock.now())
    await services.tokens.verify(old_token)

    clock.advance(1)
    with pytest.raises(jwt.ExpiredSignatureError):
        verify_with_pyjwt(old_token, jwks, identity_gateway, at=clock.now())
    with pytest.raises(InvalidIdentityToken):
        await services.tokens.verify(old_token)

    clock.advance(services.keys.cache_seconds)  # past any token the old key can have signed
    jwks = await fetch_jwks(identity_gateway)
    assert [k["kid"] for k in jwks["keys"]] == [new_kid]
    with pytest.raises(LookupError):
        verify_with_pyjwt(old_token, jwks, identity_gateway, at=clock.now())
    fresh = await services.tokens.mint(subject="usr_1", api_key_id="key_1")
    assert verify_with_pyjwt(fresh, jwks, identity_gateway, at=clock.now())["sub"] == "usr_1"


async def test_a_token_for_another_audience_or_issuer_or_tampered_is_refused(
    identity_gateway: GatewayHandle, clock: ManualClock
) -> None:
    services = identity_gateway.app[IDENTITY]
    token = await services.tokens.mint(subject="usr_1", api_key_id="key_1")
    head, body, signature = token.split(".")
    tampered = f"{head}.{body[:-2]}{'A' if body[-2] != 'A' else 'B'}{body[-1]}.{signature}"
    with pytest.raises(InvalidIdentityToken):
        await services.tokens.verify(tampered)
    unsigned = jwt.encode(jwt.decode(token, options={"verify_signature": False}), key=None, algorithm="none")
    with pytest.raises(InvalidIdentityToken):
        await services.tokens.verify(unsigned)
    services.tokens.audience = "another-audience"
    with pytest.raises(InvalidIdentityToken):
        await services.tokens.verify(token)


async def test_without_an_encryption_key_the_jwks_is_served_but_nothing_is_signed(
    sqlite_storage: Storage, clock: ManualClock
) -> None:
    async with running_gateway(storage=sqlite_storage, upstream_url=UNUSED_UPSTREAM, clock=clock) as gateway:
        assert await fetch_jwks(gateway) == {"keys": []}
        with pytest.raises(SigningUnavailable, match=r"identity\.encryption_keys"):
            await gateway.app[IDENTITY].tokens.mint(subject="usr_1", api_key_id="key_1")


async def test_a_replica_verifies_a_token_signed_by_a_key_another_replica_just_rotated_in(
    sqlite_storage: Storage, clock: ManualClock
) -> None:
    config = parse_config({"identity": {"encryption_keys": generate_secret("k1")}})
    replica_a = identity_services(config, sqlite_storage, clock)
    replica_b = identity_services(config, sqlite_storage, clock)
    first = await replica_a.tokens.mint(subject="usr_1", api_key_id="key_1")
    await replica_b.tokens.verify(first)
    await replica_b.keys.rotate()
    rotated = await replica_b.tokens.mint(subject="usr_1", api_key_id="key_1")
    clock.advance(REFRESH_GUARD)
    assert (await replica_a.tokens.verify(rotated))["sub"] == "usr_1"
    forged_kid = rotated.replace(rotated.split(".")[0], _header_with_kid("sk_forged"), 1)
    with pytest.raises(InvalidIdentityToken):
        await replica_a.tokens.verify(forged_kid)


def _header_with_kid(kid: str) -> str:
    raw = json.dumps({"alg": "ES256", "kid": kid, "typ": "JWT"}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_after_the_encryption_key_is_replaced_a_rotation_signs_again_and_old_tokens_still_verify(
    sqlite_storage: Storage, clock: ManualClock
) -> None:
    before = identity_services(
        parse_config({"identity": {"encryption_keys": generate_secret("old")}}), sqlite_storage, clock
    )
    old_token = await before.tokens.mint(subject="usr_1", api_key_id="key_1")
    after = identity_services(
        parse_config({"identity": {"encryption_keys": generate_secret("new")}}), sqlite_storage, clock
    )
    with pytest.raises(SigningUnavailable, match="not configured"):
        await after.tokens.mint(subject="usr_1", api_key_id="key_1")
    clock.advance(1)
    await after.keys.rotate()
    new_token = await after.tokens.mint(subject="usr_1", api_key_id="key_1")
    assert (await after.tokens.verify(old_token))["sub"] == "usr_1"
    assert (await after.tokens.verify(new_token))["sub"] == "usr_1"
    assert [row.encryption_key_id for row in await after.keys.all()] == ["old", "new"]


class KeysDown(SqliteStorage):
    """A database whose signing-key table cannot be read (the rest works)."""

    down = False

    async def list_signing_keys(self) -> list[StoredSigningKey]:
        if self.down:
            raise StorageUnavailable("database unreachable")
        return await super().list_signing_keys()


async def test_the_jwks_is_a_503_while_the_database_is_down_and_keeps_its_last_list_once_read(
    tmp_path: Path, clock: ManualClock
) -> None:
    storage = KeysDown(tmp_path / "gateway.db")
    await storage.open()
    try:
        await storage.migrate()
        storage.down = True
        async with running_gateway(storage=storage, upstream_url=UNUSED_UPSTREAM, clock=clock) as gateway:
            async with aiohttp.ClientSession() as http, http.get(f"{gateway.url}/.well-known/jwks.json") as response:
                assert response.status == 503
                assert response.headers["Retry-After"]
                assert (await response.json())["error"] == "temporarily_unavailable"
            storage.down = False
            assert await fetch_jwks(gateway) == {"keys": []}
            storage.down = True
            clock.advance(3600)
            assert await fetch_jwks(gateway) == {"keys": []}
    finally:
        await storage.close()
