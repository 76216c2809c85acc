"""The API key format: fixed prefix, at least 160 random bits, a checksum checked before any lookup."""

from __future__ import annotations

import math

from gateway.apikeys import ALPHABET, RANDOM_CHARS, ApiKeyFormat
from gateway.secrets_hashing import secret_hash


def test_a_minted_key_carries_the_prefix_enough_randomness_and_a_valid_checksum():
    fmt = ApiKeyFormat("mgw")
    minted = fmt.mint()
    assert minted.key.startswith("mgw_")
    assert RANDOM_CHARS * math.log2(len(ALPHABET)) >= 160
    assert fmt.is_well_formed(minted.key)
    assert minted.key_hash == secret_hash(minted.key)
    assert minted.key not in (minted.display_prefix, minted.last_four)
    assert minted.key.endswith(minted.last_four)


def test_any_single_character_change_breaks_the_checksum():
    fmt = ApiKeyFormat("mgw")
    key = fmt.mint().key
    for i in range(4, len(key)):
        for replacement in "0aZ":
            if key[i] != replacement:
                assert not fmt.is_well_formed(key[:i] + replacement + key[i + 1 :])


def test_keys_of_another_prefix_or_length_are_not_well_formed():
    key = ApiKeyFormat("abc").mint().key
    fmt = ApiKeyFormat("mgw")
    assert not fmt.is_well_formed(key)
    assert not fmt.is_well_formed(key[:-1])
    assert not fmt.is_well_formed(key + "0")
    assert not fmt.is_well_formed("")


def test_two_minted_keys_differ():
    fmt = ApiKeyFormat("mgw")
    assert len({fmt.mint().key for _ in range(100)}) == 100
