"""Discovery documents (RFC 8414, OIDC discovery, RFC 9728): advertised is what is enforced, one issuer."""

from __future__ import annotations

import aiohttp
import pytest

from tests.support.gateway import GatewayHandle

AS_PATHS = ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")


async def get_json(url: str, **headers: str) -> tuple[int, dict[str, object], dict[str, str]]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        return response.status, await response.json(), dict(response.headers)


async def test_both_authorization_server_documents_agree_and_advertise_only_what_is_enforced(gateway: GatewayHandle):
    documents = [(await get_json(gateway.url + path))[1] for path in AS_PATHS]
    assert documents[0] == documents[1]
    metadata = documents[0]
    assert metadata["issuer"] == gateway.url
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["response_types_supported"] == ["code"]
    assert set(metadata["grant_types_supported"]) == {"authorization_code", "refresh_token"}  # type: ignore[arg-type]
    assert metadata["token_endpoint_auth_methods_supported"] == ["none"]
    assert metadata["authorization_response_iss_parameter_supported"] is True
    assert metadata["client_id_metadata_document_supported"] is True
    for endpoint in ("authorization_endpoint", "token_endpoint", "registration_endpoint", "revocation_endpoint"):
        assert str(metadata[endpoint]).startswith(gateway.url + "/")


async def test_the_issuer_never_follows_request_headers(gateway: GatewayHandle):
    _, metadata, _ = await get_json(
        gateway.url + AS_PATHS[0], **{"Host": "evil.example", "X-Forwarded-Host": "evil.example"}
    )
    assert metadata["issuer"] == gateway.url
    assert "evil" not in str(metadata)


@pytest.mark.parametrize("path", ["/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"])
async def test_protected_resource_metadata_names_the_canonical_resource_and_this_issuer(
    gateway: GatewayHandle, path: str
):
    status, prm, _ = await get_json(gateway.url + path)
    assert status == 200
    assert prm["resource"] == gateway.mcp_url
    assert prm["authorization_servers"] == [gateway.url]
    assert prm["bearer_methods_supported"] == ["header"]
    assert "offline_access" not in prm["scopes_supported"]  # type: ignore[operator]


async def test_protected_resource_metadata_for_an_unknown_path_is_a_json_404(gateway: GatewayHandle):
    status, body, _ = await get_json(gateway.url + "/.well-known/oauth-protected-resource/unknown")
    assert status == 404
    assert body["error"] == "not_found"


async def test_public_documents_allow_any_origin_without_credentials_or_cookies(gateway: GatewayHandle):
    for path in (*AS_PATHS, "/.well-known/oauth-protected-resource/mcp"):
        _, _, headers = await get_json(gateway.url + path, Origin="https://attacker.example")
        assert headers["Access-Control-Allow-Origin"] == "*"
        assert "Access-Control-Allow-Credentials" not in headers
        assert "Set-Cookie" not in headers


async def test_pages_that_read_cookies_send_no_cors_headers(gateway: GatewayHandle):
    async with aiohttp.ClientSession() as http:
        for path in ("/authorize?client_id=x", "/login?tx=x", "/consent?tx=x"):
            async with http.get(gateway.url + path, headers={"Origin": "https://attacker.example"}) as response:
                assert "Access-Control-Allow-Origin" not in response.headers
                assert response.headers["X-Frame-Options"] == "DENY"
