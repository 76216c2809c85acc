"""The example upstream's check of the gateway's identity JWT (``upstream_mcp/identity.py``): the key set is
fetched once and cached, re-fetched on a new ``kid`` (a rotation) but not once per forged ``kid``; a token for
another audience or issuer, expired, tampered or unsigned is refused with the reason; ``whoami`` without
``--identity-jwks`` reports the token as not verified."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from tests.support.mcp_clients import streamable_session_client
from tests.support.upstream import UpstreamProcess
from upstream_mcp.identity import IdentityRejected, IdentityVerifier

AUDIENCE = "http://upstream.internal:9000"
ISSUER = "https://gateway.example"
JWKS_URL = "https://gateway.example/.well-known/jwks.json"


def new_key(kid: str) -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": kid, "alg": "ES256", "use": "sig"}, private=True)


class FakeGateway:
    """Publishes ``keys`` and counts the fetches; ``now`` is the verifier's monotonic clock."""

    def __init__(self, *keys: ECKey) -> None:
        self.keys = list(keys)
        self.fetches = 0
        self.now = 1000.0

    async def fetch(self, url: str) -> dict[str, Any]:
        assert url == JWKS_URL
        self.fetches += 1
        return {"keys": [key.as_dict(private=False) for key in self.keys]}

    def verifier(self) -> IdentityVerifier:
        return IdentityVerifier(JWKS_URL, AUDIENCE, issuer=ISSUER, fetch=self.fetch, monotonic=lambda: self.now)


def sign(key: ECKey, **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "usr_1", "aud": AUDIENCE, "iat": now, "exp": now + 300, "jti": "j1"}
    claims.update(overrides)
    claims = {name: value for name, value in claims.items() if value is not None}
    return jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key)


async def test_a_token_verifies_and_the_key_set_is_fetched_once_for_many_tokens() -> None:
    key = new_key("k1")
    gateway = FakeGateway(key)
    verifier = gateway.verifier()
    for _ in range(5):
        assert (await verifier.verify(sign(key)))["sub"] == "usr_1"
    assert gateway.fetches == 1


async def test_a_new_kid_re_fetches_the_key_set_at_once_but_forged_kids_do_not_each_cause_a_fetch() -> None:
    old, new = new_key("k1"), new_key("k2")
    gateway = FakeGateway(old)
    verifier = gateway.verifier()
    await verifier.verify(sign(old))
    gateway.keys.append(new)  # the gateway rotated
    assert (await verifier.verify(sign(new)))["sub"] == "usr_1"
    assert gateway.fetches == 2
    for i in range(20):
        with pytest.raises(IdentityRejected, match="not in the key set"):
            await verifier.verify(sign(new_key(f"forged{i}")))
    assert gateway.fetches == 2  # the rotation's re-fetch used this interval's one
    gateway.now += 10
    with pytest.raises(IdentityRejected, match="not in the key set"):
        await verifier.verify(sign(new_key("forged-later")))
    assert gateway.fetches == 3


async def test_the_cached_key_set_is_re_read_after_its_cache_time() -> None:
    key = new_key("k1")
    gateway = FakeGateway(key)
    verifier = gateway.verifier()
    await verifier.verify(sign(key))
    gateway.now += 300
    await verifier.verify(sign(key))
    assert gateway.fetches == 2


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"aud": "mcp-servers"}, "aud"),
        ({"iss": "https://elsewhere.example"}, "iss"),
        ({"exp": int(time.time()) - 60}, "expired"),
        ({"sub": None}, "sub"),
    ],
)
async def test_a_token_for_another_audience_or_issuer_expired_or_without_subject_is_refused(
    overrides: dict[str, Any], reason: str
) -> None:
    key = new_key("k1")
    with pytest.raises(IdentityRejected, match=reason):
        await FakeGateway(key).verifier().verify(sign(key, **overrides))


async def test_a_tampered_unsigned_or_malformed_token_is_refused() -> None:
    key = new_key("k1")
    verifier = FakeGateway(key).verifier()
    head, body, signature = sign(key).split(".")
    forged_body = jwt.encode({"alg": "ES256", "kid": "k1"}, {"sub": "admin"}, key).split(".")[1]
    for token in (
        f"{head}.{forged_body}.{signature}",
        f"{head}.{body}.",
        "not-a-jwt",
        jwt.encode({"alg": "ES256", "kid": "k1"}, {"sub": "x"}, new_key("k1")),  # another key, same kid
    ):
        with pytest.raises(IdentityRejected):
            await verifier.verify(token)


async def test_whoami_without_identity_jwks_reports_the_token_as_not_verified(upstream: UpstreamProcess) -> None:
    key = new_key("k1")
    async with streamable_session_client(upstream.mcp_url, {"X-MCP-Identity": sign(key)}) as client:
        result = await client.call_tool("whoami", {})
    seen = json.loads(result.content[0].text)  # type: ignore[union-attr]
    assert seen["identity_token"]["verified"] is False
    assert "--identity-jwks" in seen["identity_token"]["error"]
    assert seen["identity_token"]["claims"] is None


async def test_whoami_without_an_identity_token_reports_none(upstream: UpstreamProcess) -> None:
    async with streamable_session_client(upstream.mcp_url) as client:
        result = await client.call_tool("whoami", {})
    assert json.loads(result.content[0].text)["identity_token"] is None  # type: ignore[union-attr]


async def test_a_repeated_identity_header_is_not_verified(upstream: UpstreamProcess) -> None:
    """Two values: which one would a proxy have checked? Neither is trusted."""
    token = sign(new_key("k1"))
    init = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    headers = [
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
        ("MCP-Protocol-Version", "2025-06-18"),
        ("X-MCP-Identity", token),
        ("X-MCP-Identity", token),
    ]
    async with httpx2.AsyncClient() as http:
        opened = await http.post(
            upstream.mcp_url, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init}, headers=headers
        )
        session = {"Mcp-Session-Id": opened.headers["mcp-session-id"]}
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}}
        answer = await http.post(upstream.mcp_url, json=call, headers=[*headers, *session.items()])
    text = answer.text
    payload = json.loads(text[text.index("{") :].splitlines()[0]) if text.startswith("event") else answer.json()
    seen = json.loads(payload["result"]["content"][0]["text"])
    assert seen["identity_token"] == {
        "verified": False,
        "key_id": None,
        "claims": None,
        "error": "the identity header came more than once",
    }
