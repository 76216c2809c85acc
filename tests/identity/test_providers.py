"""The gateway as an OpenID Connect / OAuth 2 client, against the real oidc-provider: a user signs in through its
pages; state, PKCE S256, nonce and the RFC 9207 iss are sent and checked; the ID token is verified against the
provider's JWKS (re-fetched on an unknown kid); an e-mail is trusted only when verified."""

from __future__ import annotations

import dataclasses
import json
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from gateway.clock import ManualClock
from gateway.identity.provider_config import ProviderConfig
from gateway.identity.provider_http import JwksCache, ProviderError, verify_id_token
from gateway.identity.providers import PENDING_TTL, ProviderClient
from tests.support.oidc import OidcProvider, sign_in

SCOPES = ("openid", "offline_access", "email", "profile")


def provider_config(idp: OidcProvider, **changes: object) -> ProviderConfig:
    config = ProviderConfig(
        name="corp",
        issuer=idp.issuer,
        client_id=idp.client.client_id,
        client_secret=idp.client.client_secret,
        scopes=SCOPES,
        authorization_params=(("prompt", "consent"),),
    )
    return dataclasses.replace(config, **changes)  # type: ignore[arg-type]


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


@pytest.fixture
async def http() -> aiohttp.ClientSession:
    async with aiohttp.ClientSession() as session:
        yield session  # type: ignore[misc]


async def test_a_user_signs_in_through_an_openid_provider_and_the_gateway_learns_their_verified_email(
    oidc_provider: OidcProvider, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    client = ProviderClient(provider_config(oidc_provider), http, clock)
    url, pending = await client.begin(oidc_provider.client.redirect_uris[0])
    sent = query(url)
    assert sent["state"] == pending.state
    assert sent["nonce"] == pending.nonce
    assert sent["code_challenge_method"] == "S256"
    assert sent["code_challenge"] != pending.code_verifier
    assert sent["prompt"] == "consent"
    back = query(await sign_in(oidc_provider, url))
    assert back["iss"] == oidc_provider.issuer
    identity = await client.complete(pending, back)
    assert (identity.issuer, identity.subject) == (oidc_provider.issuer, "alice")
    assert identity.email == "alice@example.com"
    assert identity.name == "Alice"
    assert identity.tokens["refresh_token"]
    assert "refresh_token" not in repr(identity)


async def test_an_unverified_email_is_never_trusted(
    oidc_provider: OidcProvider, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    client = ProviderClient(provider_config(oidc_provider), http, clock)
    url, pending = await client.begin(oidc_provider.client.redirect_uris[0])
    identity = await client.complete(pending, query(await sign_in(oidc_provider, url, login="mallory")))
    assert identity.subject == "mallory"
    assert identity.email is None


async def test_a_forged_state_is_refused_before_the_code_is_spent(
    oidc_provider: OidcProvider, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    client = ProviderClient(provider_config(oidc_provider), http, clock)
    url, pending = await client.begin(oidc_provider.client.redirect_uris[0])
    back = query(await sign_in(oidc_provider, url))
    with pytest.raises(ProviderError) as refused:
        await client.complete(pending, {**back, "state": "forged"})
    assert refused.value.code == "invalid_state"
    assert (await client.complete(pending, back)).subject == "alice"  # the code was still unused


@pytest.mark.parametrize("iss", ["http://127.0.0.1:1", None])
async def test_a_response_with_another_or_no_issuer_is_refused_when_the_provider_advertises_rfc_9207(
    oidc_provider: OidcProvider, http: aiohttp.ClientSession, clock: ManualClock, iss: str | None
) -> None:
    client = ProviderClient(provider_config(oidc_provider), http, clock)
    url, pending = await client.begin(oidc_provider.client.redirect_uris[0])
    back = query(await sign_in(oidc_provider, url))
    forged = {k: v for k, v in back.items() if k != "iss"} | ({"iss": iss} if iss else {})
    with pytest.raises(ProviderError) as refused:
        await client.complete(pending, forged)
    assert refused.value.code == "issuer_mismatch"


async def test_an_id_token_with_another_nonce_is_refused(
    oidc_provider: OidcProvider, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    client = ProviderClient(provider_config(oidc_provider), http, clock)
    url, pending = await client.begin(oidc_provider.client.redirect_uris[0])
    back = query(await sign_in(oidc_provider, url))
    with pytest.raises(ProviderError) as refused:
        await client.complete(dataclasses.replace(pending, nonce="another-nonce"), back)
    assert refused.value.code == "invalid_id_token"
    assert "nonce" in refused.value.description


async def test_a_sign_in_finished_too_late_or_declined_gives_no_identity(
    oidc_provider: OidcProvider, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    client = ProviderClient(provider_config(oidc_provider), http, clock)
    url, pending = await client.begin(oidc_provider.client.redirect_uris[0])
    back = query(await sign_in(oidc_provider, url))
    clock.advance(PENDING_TTL)
    with pytest.raises(ProviderError, match="invalid_state"):
        await client.complete(pending, back)
    url, pending = await client.begin(oidc_provider.client.redirect_uris[0])
    with pytest.raises(ProviderError) as declined:
        await client.complete(pending, query(await sign_in(oidc_provider, url, approve=False)))
    assert declined.value.code == "access_denied"


async def test_an_unknown_kid_refetches_the_providers_jwks_and_a_token_signed_by_another_key_is_refused(
    oidc_provider: OidcProvider, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    jwks = JwksCache(http, clock)
    stale = ECKey.generate_key("P-256", parameters={"kid": "rotated-away"}, private=False)
    metadata_client = ProviderClient(provider_config(oidc_provider), http, clock)
    metadata = await metadata_client.metadata()
    assert metadata.jwks_uri is not None
    jwks.seed(metadata.jwks_uri, {"keys": [stale.as_dict()]})
    clock.advance(60)  # past the refetch guard, well inside the cache lifetime
    client = ProviderClient(provider_config(oidc_provider), http, clock, jwks)
    url, pending = await client.begin(oidc_provider.client.redirect_uris[0])
    identity = await client.complete(pending, query(await sign_in(oidc_provider, url)))
    assert identity.subject == "alice"

    real_kid = json.loads(await (await http.get(metadata.jwks_uri)).text())["keys"][0]["kid"]
    impostor = RSAKey.generate_key(2048, parameters={"kid": real_kid})
    now = int(clock.now())
    claims = {"iss": oidc_provider.issuer, "aud": oidc_provider.client.client_id, "sub": "alice", "nonce": "n"}
    forged = jwt.encode({"alg": "RS256", "kid": real_kid}, {**claims, "iat": now, "exp": now + 60}, impostor)
    with pytest.raises(ProviderError) as refused:
        await verify_id_token(
            forged, metadata=metadata, jwks=jwks, client_id=oidc_provider.client.client_id, nonce="n", now=now
        )
    assert refused.value.code == "invalid_id_token"


async def test_a_discovery_document_naming_another_issuer_is_refused(
    oidc_provider: OidcProvider, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    client = ProviderClient(provider_config(oidc_provider, issuer=oidc_provider.issuer + "/"), http, clock)
    with pytest.raises(ProviderError) as refused:
        await client.begin(oidc_provider.client.redirect_uris[0])
    assert refused.value.code == "misconfigured"


async def test_a_plain_oauth2_provider_gives_the_user_from_its_user_info_endpoint(
    oidc_provider: OidcProvider, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    config = provider_config(
        oidc_provider,
        issuer=None,
        authorization_endpoint=oidc_provider.issuer + "/auth",
        token_endpoint=oidc_provider.issuer + "/token",
        userinfo_endpoint=oidc_provider.issuer + "/me",
        scopes=("openid", "email"),
    )
    client = ProviderClient(config, http, clock)
    url, pending = await client.begin(oidc_provider.client.redirect_uris[0])
    assert pending.nonce is None
    identity = await client.complete(pending, query(await sign_in(oidc_provider, url)))
    assert (identity.subject, identity.email) == ("alice", "alice@example.com")


@pytest.mark.parametrize(("login", "email"), [("alice", "alice@example.com"), ("mallory", None)])
async def test_a_github_like_provider_gives_only_the_primary_verified_email_from_its_emails_api(
    oidc_provider: OidcProvider, http: aiohttp.ClientSession, clock: ManualClock, login: str, email: str | None
) -> None:
    config = provider_config(
        oidc_provider,
        name="github",
        issuer=None,
        authorization_endpoint=oidc_provider.issuer + "/auth",
        token_endpoint=oidc_provider.issuer + "/token",
        userinfo_endpoint=oidc_provider.issuer + "/me",
        emails_endpoint=oidc_provider.emails_url,
        scopes=("openid", "email"),
    )
    client = ProviderClient(config, http, clock)
    url, pending = await client.begin(oidc_provider.client.redirect_uris[0])
    identity = await client.complete(pending, query(await sign_in(oidc_provider, url, login=login)))
    assert (identity.subject, identity.email) == (login, email)


async def test_an_unreachable_token_endpoint_is_a_provider_unavailable_error_not_a_crash(
    oidc_provider: OidcProvider, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    config = provider_config(
        oidc_provider,
        issuer=None,
        authorization_endpoint=oidc_provider.issuer + "/auth",
        token_endpoint="http://127.0.0.1:9/token",
        userinfo_endpoint=oidc_provider.issuer + "/me",
        scopes=("openid", "email"),
    )
    client = ProviderClient(config, http, clock)
    url, pending = await client.begin(oidc_provider.client.redirect_uris[0])
    with pytest.raises(ProviderError) as refused:
        await client.complete(pending, query(await sign_in(oidc_provider, url)))
    assert refused.value.code == "provider_unavailable"
    assert "127.0.0.1" not in refused.value.description
