"""Redirect URI validation and matching as pure functions (security-cases 6, 7, 8, 22, 23)."""

from __future__ import annotations

import pytest

from gateway.config import RegistrationConfig
from gateway.oauth.errors import InvalidRedirectUri
from gateway.oauth.redirect_uris import (
    RedirectUriKind,
    classify_redirect_uri,
    is_loopback_redirect_uri,
    is_valid_redirect_uri,
    redirect_uri_matches,
)
from tests.support.redirect_corpora import NOT_EXACTLY_REGISTERED, REGISTERED

SCHEMES = RegistrationConfig().private_use_schemes

ACCEPTED = [
    ("https://c.example/cb", RedirectUriKind.HTTPS),
    ("https://c.example", RedirectUriKind.HTTPS),
    ("https://c.example:8443/cb?x=1&y=2", RedirectUriKind.HTTPS),
    ("https://C.Example/Callback", RedirectUriKind.HTTPS),
    ("https://[2001:db8::1]/cb", RedirectUriKind.HTTPS),
    ("http://127.0.0.1/cb", RedirectUriKind.LOOPBACK),
    ("http://127.0.0.1:33418/callback", RedirectUriKind.LOOPBACK),
    ("http://[::1]/cb", RedirectUriKind.LOOPBACK),
    ("http://[::1]:8080/cb", RedirectUriKind.LOOPBACK),
    ("http://localhost/cb", RedirectUriKind.LOOPBACK),
    ("http://localhost:6274/oauth/callback?x=1", RedirectUriKind.LOOPBACK),
    ("http://127.0.0.1", RedirectUriKind.LOOPBACK),
    ("cursor://anysphere.cursor-mcp/oauth/callback", RedirectUriKind.PRIVATE_USE),
    ("vscode://vscode.github-authentication/did-authenticate", RedirectUriKind.PRIVATE_USE),
    ("com.example.app:/cb", RedirectUriKind.PRIVATE_USE),
    ("com.example.app:/oauth2redirect/example-provider", RedirectUriKind.PRIVATE_USE),
    ("io.github.someone.tool://callback", RedirectUriKind.PRIVATE_USE),
]

REJECTED = [
    # case 6: shape
    "https://c.example/cb#f",
    "https://c.example/cb#",
    "http://c.example/cb",
    "https://*.c.example/cb",
    "https://u:p@c.example/cb",
    "https://evil@c.example/cb",
    "/cb",
    "cb",
    "",
    "//c.example/cb",
    "http://localhost.evil.example/cb",
    "http://127.0.0.1.nip.io/cb",
    "http://testlocalhost/cb",
    "http://127.0.0.2/cb",
    "http://0.0.0.0/cb",
    "http://[::ffff:127.0.0.1]/cb",
    "http://LOCALHOST/cb",
    "http://localhost:0/cb",
    "http://localhost:65536/cb",
    "http://localhost:/cb",
    "http://127.0.0.1@evil.example/cb",
    "http://localhost\\@evil.example/cb",
    "https://c.example:99999/cb",
    "https://c.example:x/cb",
    "https://c.example\\@evil.example/cb",
    "https:/c.example/cb",
    "https://",
    # case 7: dangerous schemes and encodings
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "\tjavascript:alert(1)",
    " javascript:alert(1)",
    "java\nscript:alert(1)",
    "\x00javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "vbscript:msgbox(1)",
    "file:///etc/passwd",
    "blob:https://c.example/uuid",
    "mailto:a@c.example",
    "HTTPS://c.example/cb",
    "Https://c.example/cb",
    "https://c.example/c\x00b",
    "https://c.example/c\x1fb",
    "https://c.example/c\x7fb",
    "https://c.example/c\x85b",
    "https://c.example/c\u00a0b",
    "https://c.example/c b",
    "https://c.example/cb\n",
    "https://c.exam\u0440le/cb",
    "\u202ehttps://c.example/cb",
    # case 8: private-use schemes need a period unless allowlisted
    "myapp://cb",
    "myapp:/cb",
    "com.example.app:",
    "com.example.app://",
    ".example:/cb",
    "com..example:/cb",
    "https://c.example/" + "a" * 3000,
]


@pytest.mark.parametrize(("uri", "kind"), ACCEPTED)
def test_allowlisted_redirect_uri_shapes_are_accepted(uri: str, kind: RedirectUriKind) -> None:
    assert classify_redirect_uri(uri, private_use_schemes=SCHEMES) is kind


@pytest.mark.parametrize("uri", REJECTED)
def test_anything_outside_the_allowlist_is_rejected(uri: str) -> None:
    with pytest.raises(InvalidRedirectUri):
        classify_redirect_uri(uri, private_use_schemes=SCHEMES)
    assert not is_valid_redirect_uri(uri, private_use_schemes=SCHEMES)


def test_rejection_reasons_never_echo_the_uri() -> None:
    with pytest.raises(InvalidRedirectUri) as caught:
        classify_redirect_uri("https://c.example/secret-path#frag", private_use_schemes=SCHEMES)
    assert "secret-path" not in caught.value.description


def test_private_use_schemes_without_a_period_are_accepted_only_when_the_operator_allows_them() -> None:
    assert not is_valid_redirect_uri("myapp://cb", private_use_schemes=())
    assert is_valid_redirect_uri("myapp://cb", private_use_schemes=("myapp",))
    assert not is_valid_redirect_uri("cursor://anysphere.cursor-mcp/oauth/callback", private_use_schemes=())
    assert is_valid_redirect_uri("com.example.app:/cb", private_use_schemes=())


def test_the_operator_allowlist_cannot_readmit_dangerous_schemes_through_case_tricks() -> None:
    assert not is_valid_redirect_uri("CURSOR://anysphere.cursor-mcp/cb", private_use_schemes=SCHEMES)


# Case 22: exact matching for everything but loopback.


@pytest.mark.parametrize("requested", NOT_EXACTLY_REGISTERED)
def test_non_loopback_redirect_uris_match_only_exactly(requested: str) -> None:
    assert redirect_uri_matches(REGISTERED, REGISTERED)
    assert not redirect_uri_matches(REGISTERED, requested)


# Case 23: loopback, any port, nothing else.
@pytest.mark.parametrize(
    ("registered", "requested", "matches"),
    [
        ("http://127.0.0.1/callback", "http://127.0.0.1:49152/callback", True),
        ("http://127.0.0.1/callback", "http://127.0.0.1/callback", True),
        ("http://127.0.0.1:3000/callback", "http://127.0.0.1:49152/callback", True),
        ("http://127.0.0.1/callback?x=1", "http://127.0.0.1:49152/callback?x=1", True),
        ("http://[::1]/callback", "http://[::1]:49152/callback", True),
        ("http://localhost/callback", "http://localhost:49152/callback", True),
        ("http://127.0.0.1/callback", "http://127.0.0.1:49152/callback2", False),
        ("http://127.0.0.1/callback", "http://127.0.0.1:49152/callback/", False),
        ("http://127.0.0.1/callback", "http://127.0.0.1:49152/Callback", False),
        ("http://127.0.0.1/callback", "http://127.0.0.1:49152/callback?x=1", False),
        ("http://127.0.0.1/callback?x=1", "http://127.0.0.1:49152/callback", False),
        ("http://127.0.0.1/callback", "http://127.0.0.1:49152/callback#f", False),
        ("http://127.0.0.1/callback", "https://127.0.0.1:49152/callback", False),
        ("http://127.0.0.1/callback", "http://127.0.0.2:49152/callback", False),
        ("http://127.0.0.1/callback", "http://[::1]:49152/callback", False),
        ("http://127.0.0.1/callback", "http://localhost:49152/callback", False),
        ("http://localhost/callback", "http://127.0.0.1:49152/callback", False),
        ("http://[::1]/callback", "http://localhost:49152/callback", False),
        ("http://127.0.0.1/callback", "http://127.0.0.1:0/callback", False),
        ("http://127.0.0.1/callback", "http://127.0.0.1:99999/callback", False),
        ("http://127.0.0.1/callback", "http://127.0.0.1:49152@evil.example/callback", False),
        ("http://127.0.0.1/callback", "http://127.0.0.1.nip.io:49152/callback", False),
        ("https://c.example/callback", "https://c.example:49152/callback", False),
        ("cursor://anysphere.cursor-mcp/oauth/callback", "cursor://anysphere.cursor-mcp:1/oauth/callback", False),
    ],
)
def test_loopback_redirect_uris_match_on_any_port_and_nothing_else(
    registered: str, requested: str, matches: bool
) -> None:
    assert redirect_uri_matches(registered, requested) is matches


def test_private_use_redirect_uris_match_exactly() -> None:
    registered = "cursor://anysphere.cursor-mcp/oauth/callback"
    assert redirect_uri_matches(registered, registered)
    assert not redirect_uri_matches(registered, "cursor://anysphere.cursor-mcp/oauth/callback/")


def test_only_well_formed_http_on_the_three_loopback_names_is_loopback() -> None:
    assert is_loopback_redirect_uri("http://127.0.0.1:5/cb")
    assert is_loopback_redirect_uri("http://[::1]/cb")
    assert is_loopback_redirect_uri("http://localhost/cb")
    assert not is_loopback_redirect_uri("https://127.0.0.1/cb")
    assert not is_loopback_redirect_uri("http://127.0.0.1/cb#x")
    assert not is_loopback_redirect_uri("http://127.0.0.1/c b")
