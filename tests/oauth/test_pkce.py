"""PKCE (RFC 7636), S256 only: what the authorize endpoint accepts and what the token endpoint verifies."""

from __future__ import annotations

import base64
import hashlib

import pytest

from gateway.oauth.errors import InvalidRequest
from gateway.oauth.pkce import is_well_formed_verifier, s256, validate_challenge, verify

# RFC 7636 Appendix B.
RFC_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
RFC_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_the_s256_transform_matches_the_rfc_7636_example():
    assert s256(RFC_VERIFIER) == RFC_CHALLENGE


def test_an_s256_challenge_of_43_base64url_characters_is_accepted():
    assert validate_challenge(RFC_CHALLENGE, "S256") == RFC_CHALLENGE


@pytest.mark.parametrize("method", [None, "plain", "s256", "S256 ", "", "SHA256"])
def test_a_challenge_method_other_than_exactly_s256_is_refused_and_a_missing_one_is_not_taken_as_plain(
    method: str | None,
):
    with pytest.raises(InvalidRequest):
        validate_challenge(RFC_CHALLENGE, method)


@pytest.mark.parametrize(
    "challenge",
    [
        None,
        "",
        RFC_CHALLENGE[:42],
        RFC_CHALLENGE + "A",
        RFC_CHALLENGE[:42] + "=",
        RFC_CHALLENGE[:42] + "+",
        RFC_CHALLENGE[:42] + "/",
        RFC_CHALLENGE + "\n",
        RFC_CHALLENGE[:42] + "é",
    ],
)
def test_a_challenge_that_is_missing_or_not_43_unpadded_base64url_characters_is_refused(challenge: str | None):
    with pytest.raises(InvalidRequest):
        validate_challenge(challenge, "S256")


def test_the_matching_verifier_verifies():
    assert verify(RFC_VERIFIER, RFC_CHALLENGE)


def test_verifiers_of_43_and_128_unreserved_characters_are_well_formed():
    assert is_well_formed_verifier("a" * 43)
    assert is_well_formed_verifier("A-._~z9" * 18 + "ab")
    long = "-._~" * 32
    assert len(long) == 128
    assert verify(long, s256(long))


@pytest.mark.parametrize(
    "verifier",
    [
        "a" * 42,
        "a" * 129,
        "a" * 42 + "+",
        "a" * 42 + "=",
        "a" * 42 + " ",
        "a" * 42 + "é",
        "a" * 43 + "\n",
        "",
    ],
)
def test_a_verifier_outside_the_abnf_never_verifies_even_against_its_own_hash(verifier: str):
    assert not is_well_formed_verifier(verifier)
    own_hash = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("utf-8")).digest()).rstrip(b"=").decode()
    assert not verify(verifier, own_hash)


def test_a_wrong_verifier_does_not_verify():
    assert not verify("b" * 43, RFC_CHALLENGE)


def test_the_challenge_itself_presented_as_the_verifier_does_not_verify():
    assert not verify(RFC_CHALLENGE, RFC_CHALLENGE)


@pytest.mark.parametrize("stored", ["", "plain-challenge", RFC_VERIFIER + "x"])
def test_a_code_stored_without_a_proper_s256_challenge_never_verifies(stored: str):
    assert not verify(RFC_VERIFIER, stored)
    assert not verify(stored, stored)
