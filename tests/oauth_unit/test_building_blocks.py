"""Pure building blocks of the authorization server: token shapes, resources, scopes, redirects, throttling."""

from __future__ import annotations

import pytest

from gateway.clock import ManualClock
from gateway.config import GatewayConfig, LimitsConfig, ProtectiveLimitsConfig
from gateway.metrics import Metrics
from gateway.oauth.flow import csrf_token, with_params
from gateway.oauth.redirect_uris import RedirectUriKind, redirect_receiver
from gateway.oauth.resource_uri import canonical_resource
from gateway.oauth.scopes import ScopePolicy
from gateway.oauth.token_formats import TokenType, classify, mint
from gateway.secrets_hashing import secret_hash
from gateway.throttle import MemoryBudgets, ProtectiveLimits


def test_minted_secrets_carry_their_type_and_256_random_bits_and_are_stored_by_hash():
    for kind in TokenType:
        token, digest = mint(kind)
        assert token.startswith(kind.value)
        assert len(token) == len(kind.value) + 43
        assert digest == secret_hash(token)
        assert classify(token) is kind


@pytest.mark.parametrize("candidate", ["", "gwat_short", "gwat_" + "a" * 44, "mgw_" + "a" * 38, "gwxx_" + "a" * 43])
def test_anything_else_is_not_classified_as_a_gateway_token(candidate: str):
    assert classify(candidate) is None


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("https://gw.example/mcp", "https://gw.example/mcp"),
        ("https://gw.example/mcp/", "https://gw.example/mcp"),
        ("HTTPS://GW.EXAMPLE/mcp", "https://gw.example/mcp"),
        ("https://gw.example/mcp#x", None),
        ("/mcp", None),
        ("https://u:p@gw.example/mcp", None),
        ("https://gw.example/m cp", None),
    ],
)
def test_resources_are_compared_in_canonical_form(given: str, canonical: str | None):
    assert canonical_resource(given) == canonical


def test_scope_policy_defaults_accepts_offline_access_and_refuses_unknown_scopes():
    policy = ScopePolicy(supported=("mcp:read", "mcp:tools"), default=("mcp:tools",))
    assert policy.settle(None) == "mcp:tools"
    assert policy.settle("offline_access") == "mcp:tools"
    assert policy.settle("mcp:tools offline_access") == "mcp:tools"
    assert policy.settle("mcp:tools mcp:read") == "mcp:read mcp:tools"
    assert policy.settle("admin") is None


def test_redirect_parameters_are_encoded_and_keep_the_existing_query():
    assert with_params("https://c.example/cb", {"code": "x", "state": "a&code=evil"}) == (
        "https://c.example/cb?code=x&state=a%26code%3Devil"
    )
    assert with_params("https://c.example/cb?x=1", {"error": "access_denied", "state": None}) == (
        "https://c.example/cb?x=1&error=access_denied"
    )


def test_the_receiver_of_a_redirect_uri_is_what_gets_the_code_not_the_authority_it_spells():
    """Issue 11 item 12: a private-use URI's authority is whatever its author typed."""
    cursor = "cursor://anysphere.cursor-mcp/oauth/callback"
    assert str(redirect_receiver(cursor)) == f"the app that opens cursor: links ({cursor})"
    evil = redirect_receiver("com.evil.app://claude.ai/callback")
    assert evil.kind is RedirectUriKind.PRIVATE_USE
    assert str(evil) == "the app that opens com.evil.app: links (com.evil.app://claude.ai/callback)"
    assert str(redirect_receiver("http://127.0.0.1:3000/cb")) == "an app on this computer (port 3000)"
    assert str(redirect_receiver("http://[::1]/cb")) == "an app on this computer (port 80)"
    assert redirect_receiver("http://localhost:53412/cb").kind is RedirectUriKind.LOOPBACK
    assert str(redirect_receiver("https://127.0.0.1.nip.io/cb")) == "127.0.0.1.nip.io"
    assert str(redirect_receiver("https://App.Example:8443/cb?x=1")) == "app.example:8443"
    assert redirect_receiver("https://App.Example/cb").kind is RedirectUriKind.HTTPS
    assert evil.app_scheme
    assert not evil.on_this_computer
    odd = redirect_receiver("not a redirect uri")  # no accepted shape: shown in full, no claim made
    assert (odd.kind, str(odd), odd.app_scheme, odd.on_this_computer) == (None, "not a redirect uri", False, False)


def test_the_csrf_token_is_stable_for_one_browser_and_request_and_differs_otherwise():
    assert csrf_token("tx", "browser-a") == csrf_token("tx", "browser-a")
    assert csrf_token("tx", "browser-a") != csrf_token("tx", "browser-b")
    assert csrf_token("tx", "browser-a") != csrf_token("tx2", "browser-a")


async def test_login_failures_lock_an_account_for_their_address_only_and_the_lock_expires():
    clock = ManualClock()
    throttle = ProtectiveLimits(MemoryBudgets(clock), GatewayConfig(), Metrics(), "gw:q")
    for _ in range(5):
        assert await throttle.login_attempt("ada@example.com", "10.0.0.1") == 0  # each one fails
    assert await throttle.login_attempt("ada@example.com", "10.0.0.1") > 0
    assert await throttle.login_attempt("ada@example.com", "10.0.0.2") == 0  # the owner, elsewhere
    await throttle.login_succeeded("ada@example.com", "10.0.0.2")
    assert await throttle.login_attempt("bob@example.com", "10.0.0.1") == 0
    await throttle.login_succeeded("bob@example.com", "10.0.0.2")
    clock.advance(901)
    assert await throttle.login_attempt("ada@example.com", "10.0.0.1") == 0


async def test_successful_sign_ins_give_their_address_unit_back_and_clear_the_account():
    throttle = ProtectiveLimits(MemoryBudgets(ManualClock()), GatewayConfig(), Metrics(), "gw:q")
    for i in range(100):  # far more than the 30 failures an address may have: successes are free
        assert await throttle.login_attempt(f"user{i}@example.com", "10.0.0.9") == 0
        await throttle.login_succeeded(f"user{i}@example.com", "10.0.0.9")
    for _ in range(5):
        assert await throttle.login_attempt("ada@example.com", "10.0.0.9") == 0
    await throttle.login_succeeded("ada@example.com", "10.0.0.9")
    assert await throttle.login_attempt("ada@example.com", "10.0.0.9") == 0


async def test_a_right_password_while_an_account_is_crowded_gives_the_guessers_no_attempt_back():
    clock = ManualClock()
    config = GatewayConfig(
        limits=LimitsConfig(
            protective=ProtectiveLimitsConfig(login_failures_per_account=5, login_failures_per_account_total=4)
        )
    )
    throttle = ProtectiveLimits(MemoryBudgets(clock), config, Metrics(), "gw:q")
    for guesser in ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"):
        assert await throttle.login_attempt("ada@example.com", guesser) == 0  # each one fails: the account is crowded
    assert await throttle.login_attempt("ada@example.com", "10.0.0.1") > 0  # one attempt per address while crowded
    assert await throttle.login_attempt("ada@example.com", "10.9.9.9") == 0  # the owner, from their address
    await throttle.login_succeeded("ada@example.com", "10.9.9.9")
    assert await throttle.login_attempt("ada@example.com", "10.0.0.1") > 0  # still crowded for the guessers
