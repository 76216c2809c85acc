"""The upstream's identity JWT (``gateway/identity/upstream.py``): its claims verify with an independent JOSE
library (PyJWT) against the published keys; it is signed once per credential per half-life (a counting signer:
``UpstreamIdentity.signed``), again after a rotation or a scope change, forgotten on revocation, and the cache is
a bounded LRU."""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from gateway.clock import ManualClock
from gateway.config import parse_config
from gateway.credentials.principal import Principal
from gateway.errors import ServiceUnavailable
from gateway.identity.sealing import generate_secret
from gateway.identity.signing_keys import SigningKeys
from gateway.identity.upstream import LIFETIME, UpstreamIdentity
from gateway.identity.web import identity_services
from gateway.revocation import Revocation
from gateway.storage import Storage

ISSUER = "https://gateway.example"
AUDIENCE = "http://upstream.internal:9000"
KEY = Principal(user_id="usr_1", email="ada@example.com", method="api_key", credential_id="key_1")
OAUTH = Principal(
    user_id="usr_2",
    email="bob@example.com",
    method="oauth",
    credential_id="fam_1",
    client_id="cli_1",
    scope="mcp:tools",
)


def keys_for(storage: Storage, clock: ManualClock) -> SigningKeys:
    config = parse_config({"identity": {"encryption_keys": generate_secret("k1")}})
    return identity_services(config, storage, clock).keys


def signer(storage: Storage, clock: ManualClock, **kwargs: Any) -> UpstreamIdentity:
    return UpstreamIdentity(
        keys_for(storage, clock),
        clock,
        issuer=ISSUER,
        audience=AUDIENCE,
        default_scopes=("mcp:tools", "mcp:read"),
        **kwargs,
    )


async def verified(token: str, keys: SigningKeys, clock: ManualClock) -> dict[str, Any]:
    jwks = {"keys": await keys.published()}
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwt.PyJWKSet.from_dict(jwks).keys if k.key_id == kid)
    claims: dict[str, Any] = jwt.decode(
        token,
        key.key,
        algorithms=["ES256"],
        audience=AUDIENCE,
        issuer=ISSUER,
        options={"require": ["iss", "sub", "aud", "exp", "iat", "jti"]},
    )
    assert claims["iat"] <= clock.now() < claims["exp"]
    return claims


async def test_an_api_key_token_says_who_with_the_default_scopes_and_verifies_with_pyjwt(
    sqlite_storage: Storage, clock: ManualClock
) -> None:
    identity = signer(sqlite_storage, clock)
    token = await identity.token_for(KEY)
    claims = await verified(token, identity._keys, clock)
    assert set(claims) == {"iss", "sub", "aud", "exp", "iat", "jti", "api_key_id", "scope", "connected_services"}
    assert (claims["sub"], claims["api_key_id"], claims["scope"]) == ("usr_1", "key_1", "mcp:tools mcp:read")
    assert claims["connected_services"] == []
    assert claims["exp"] - claims["iat"] == LIFETIME == 300
    assert jwt.get_unverified_header(token)["alg"] == "ES256"


async def test_an_api_key_with_scopes_carries_its_own(sqlite_storage: Storage, clock: ManualClock) -> None:
    identity = signer(sqlite_storage, clock)
    scoped = Principal(**{**_fields(KEY), "scope": "mcp:read"})
    assert (await verified(await identity.token_for(scoped), identity._keys, clock))["scope"] == "mcp:read"


async def test_an_oauth_token_carries_its_client_and_its_own_scopes_and_no_key_id(
    sqlite_storage: Storage, clock: ManualClock
) -> None:
    identity = signer(sqlite_storage, clock)
    claims = await verified(await identity.token_for(OAUTH), identity._keys, clock)
    assert set(claims) == {"iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope", "connected_services"}
    assert (claims["sub"], claims["client_id"], claims["scope"]) == ("usr_2", "cli_1", "mcp:tools")


async def test_a_credential_is_signed_for_once_per_half_life_however_many_requests_it_makes(
    sqlite_storage: Storage, clock: ManualClock
) -> None:
    identity = signer(sqlite_storage, clock)
    first = await identity.token_for(KEY)
    for _ in range(200):
        assert await identity.token_for(KEY) == first
    clock.advance(LIFETIME / 2 - 1)
    assert await identity.token_for(KEY) == first
    assert identity.signed == 1

    clock.advance(1)  # half its life left: re-signed, well before it expires
    second = await identity.token_for(KEY)
    assert second != first
    assert identity.signed == 2
    await identity.token_for(OAUTH)
    assert identity.signed == 3


async def test_after_a_rotation_the_next_request_gets_a_token_signed_by_the_new_key(
    sqlite_storage: Storage, clock: ManualClock
) -> None:
    identity = signer(sqlite_storage, clock)
    before = await identity.token_for(KEY)
    new_kid, _ = await identity._keys.rotate()
    after = await identity.token_for(KEY)
    assert jwt.get_unverified_header(before)["kid"] != new_kid == jwt.get_unverified_header(after)["kid"]
    assert (await verified(after, identity._keys, clock))["sub"] == "usr_1"


async def test_a_scope_change_is_signed_at_once(sqlite_storage: Storage, clock: ManualClock) -> None:
    identity = signer(sqlite_storage, clock)
    await identity.token_for(OAUTH)
    narrower = Principal(**{**_fields(OAUTH), "scope": "mcp:read"})
    claims = await verified(await identity.token_for(narrower), identity._keys, clock)
    assert claims["scope"] == "mcp:read"
    assert identity.signed == 2


async def test_a_revocation_forgets_the_tokens_of_the_credentials_it_names_only(
    sqlite_storage: Storage, clock: ManualClock
) -> None:
    identity = signer(sqlite_storage, clock)
    key_token, oauth_token = await identity.token_for(KEY), await identity.token_for(OAUTH)
    identity.on_revocation(Revocation(account_id="usr_1", committed_at=clock.now(), api_key_ids=("key_1",)))
    assert len(identity) == 1
    assert await identity.token_for(OAUTH) == oauth_token
    assert await identity.token_for(KEY) != key_token
    identity.on_revocation(Revocation(account_id="usr_2", committed_at=clock.now(), all_credentials=True))
    identity.on_revocation(Revocation(account_id="usr_1", committed_at=clock.now(), family_ids=("fam_1",)))
    assert len(identity) == 1  # usr_2's credentials are gone; a family id never names an API key
    identity.forget_all()  # the bus lost announcements
    assert len(identity) == 0


async def test_the_cache_is_bounded_and_drops_the_least_recently_used_credential_first(
    sqlite_storage: Storage, clock: ManualClock
) -> None:
    identity = signer(sqlite_storage, clock, max_entries=3)
    principals = [Principal(**{**_fields(KEY), "credential_id": f"key_{i}"}) for i in range(4)]
    first = [await identity.token_for(p) for p in principals[:3]]
    assert await identity.token_for(principals[0]) == first[0]  # key_0 is now the most recently used
    await identity.token_for(principals[3])  # evicts key_1
    assert len(identity) == 3
    assert await identity.token_for(principals[0]) == first[0]
    assert await identity.token_for(principals[2]) == first[2]
    assert await identity.token_for(principals[1]) != first[1]


async def test_without_a_usable_signing_key_a_cached_token_still_valid_is_used_else_503(
    sqlite_storage: Storage, clock: ManualClock
) -> None:
    identity = signer(sqlite_storage, clock)
    token = await identity.token_for(KEY)
    identity._keys._encryption = None  # the operator key is gone: the current key cannot be unsealed
    identity._keys._unsealed.clear()
    clock.advance(LIFETIME / 2)
    assert await identity.token_for(KEY) == token
    with pytest.raises(ServiceUnavailable):
        await identity.token_for(OAUTH)
    clock.advance(LIFETIME / 2 - 1)
    with pytest.raises(ServiceUnavailable):
        await identity.token_for(KEY)


def _fields(principal: Principal) -> dict[str, Any]:
    return {name: getattr(principal, name) for name in Principal.__slots__}


async def test_the_upstream_token_lists_the_users_live_connected_services_as_of_signing(
    sqlite_storage: Storage, clock: ManualClock
) -> None:
    identity = signer(sqlite_storage, clock)
    asked: list[str] = []

    async def connected(user_id: str) -> list[str]:
        asked.append(user_id)
        return ["github", "google"]

    identity.connected_services = connected
    claims = await verified(await identity.token_for(KEY), identity._keys, clock)
    assert claims["connected_services"] == ["github", "google"]
    await identity.token_for(KEY)  # served from the cache: no second look-up
    assert asked == ["usr_1"]
