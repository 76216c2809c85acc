"""The test OpenID provider itself: it starts, signs a user in through its pages driven with plain HTTP, and its
stand-in API validates the access tokens it issued."""

from __future__ import annotations

import base64
import hashlib
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp

from tests.support.oidc import OidcProvider, sign_in


def _authorization_url(provider: OidcProvider, *, state: str, challenge: str, scope: str) -> str:
    query = {
        "response_type": "code",
        "client_id": provider.client.client_id,
        "redirect_uri": provider.client.redirect_uris[0],
        "scope": scope,
        "state": state,
        "nonce": secrets.token_urlsafe(16),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "prompt": "consent",
    }
    return f"{provider.issuer}/auth?{urlencode(query)}"


async def _code_grant(provider: OidcProvider, scope: str) -> dict[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    location = await sign_in(provider, _authorization_url(provider, state="s1", challenge=challenge, scope=scope))
    params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert params["state"] == "s1"
    assert params["iss"] == provider.issuer
    basic = base64.b64encode(f"{provider.client.client_id}:{provider.client.client_secret}".encode()).decode()
    async with aiohttp.ClientSession() as http:
        form = {
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": provider.client.redirect_uris[0],
            "code_verifier": verifier,
        }
        async with http.post(
            f"{provider.issuer}/token", data=form, headers={"Authorization": f"Basic {basic}"}
        ) as response:
            assert response.status == 200, await response.text()
            tokens: dict[str, str] = await response.json()
    return tokens


async def test_a_user_signs_in_through_the_provider_pages_and_its_api_accepts_the_token(
    oidc_provider: OidcProvider,
) -> None:
    tokens = await _code_grant(oidc_provider, "openid offline_access email profile")
    assert tokens["id_token"]
    assert tokens["refresh_token"]
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        async with http.get(oidc_provider.profile_url, headers=headers) as response:
            assert response.status == 200
            assert await response.json() == {
                "sub": "alice",
                "email": "alice@example.com",
                "email_verified": True,
                "name": "Alice",
            }
        async with http.get(oidc_provider.profile_url, headers={"Authorization": "Bearer nope"}) as response:
            assert response.status == 401
            assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


async def test_the_provider_api_refuses_a_token_without_the_profile_scope(oidc_provider: OidcProvider) -> None:
    tokens = await _code_grant(oidc_provider, "openid email")
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {tokens['access_token']}", "X-Probe": "1"}
        async with http.get(oidc_provider.profile_url, headers=headers) as response:
            assert response.status == 403
        async with http.post(oidc_provider.echo_url + "?a=b", headers=headers) as response:
            echoed = await response.json()
    assert echoed["method"] == "POST"
    assert echoed["query"] == "a=b"
    assert echoed["headers"]["x-probe"] == "1"


async def test_a_user_who_declines_reaches_the_client_with_access_denied(oidc_provider: OidcProvider) -> None:
    url = _authorization_url(oidc_provider, state="s2", challenge="x" * 43, scope="openid")
    location = await sign_in(oidc_provider, url, approve=False)
    params = parse_qs(urlsplit(location).query)
    assert params["error"] == ["access_denied"]
    assert params["state"] == ["s2"]
