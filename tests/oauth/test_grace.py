"""The grace blob: the successor pair sealed under a key only the retired refresh token can derive."""

from __future__ import annotations

from gateway.oauth.grace import open_, seal
from gateway.oauth.issuance import TokenPair
from gateway.oauth.token_formats import TokenType, mint


def _pair() -> TokenPair:
    access, _ = mint(TokenType.ACCESS)
    refresh, _ = mint(TokenType.REFRESH)
    return TokenPair(access_token=access, refresh_token=refresh, access_expires_at=1_800_003_600.5, scope="mcp:tools")


def test_the_old_refresh_token_opens_the_pair_sealed_under_it():
    old, _ = mint(TokenType.REFRESH)
    pair = _pair()
    assert open_(old, seal(old, pair)) == pair


def test_the_blob_contains_neither_token_in_clear():
    old, _ = mint(TokenType.REFRESH)
    pair = _pair()
    blob = seal(old, pair)
    for secret in (old, pair.access_token, pair.refresh_token):
        assert secret.encode() not in blob
        assert secret[5:].encode() not in blob


def test_any_other_token_cannot_open_the_blob():
    old, _ = mint(TokenType.REFRESH)
    other, _ = mint(TokenType.REFRESH)
    blob = seal(old, _pair())
    assert open_(other, blob) is None
    assert open_(old[:-1] + ("A" if old[-1] != "A" else "B"), blob) is None


def test_sealing_the_same_pair_twice_gives_different_blobs():
    old, _ = mint(TokenType.REFRESH)
    pair = _pair()
    first, second = seal(old, pair), seal(old, pair)
    assert first != second
    assert open_(old, first) == open_(old, second) == pair


def test_a_damaged_truncated_or_foreign_blob_opens_to_nothing():
    old, _ = mint(TokenType.REFRESH)
    blob = seal(old, _pair())
    flipped = bytearray(blob)
    flipped[-1] ^= 0x01
    assert open_(old, bytes(flipped)) is None
    assert open_(old, blob[:20]) is None
    assert open_(old, b"") is None
    assert open_(old, b"\x02" + blob[1:]) is None
    assert open_(old, b"\x00" * 200) is None
