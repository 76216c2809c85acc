"""The API key format: fixed prefix, at least 160 random bits, a checksum checked before any lookup."""

from __future__ import annotations

import math
import re

import pytest

from gateway.apikeys import ALPHABET, RANDOM_CHARS, ApiKeyFormat
from gateway.config import ConfigError, parse_config
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


def test_the_hex32_format_mints_mcp_rank_keys_with_an_underscored_prefix():
    fmt = ApiKeyFormat("sk_mcp_rank", "hex32")
    key = fmt.mint().key
    assert re.fullmatch(r"sk_mcp_rank_[0-9a-f]{32}", key)
    assert fmt.is_well_formed(key)
    assert fmt.is_well_formed("sk_mcp_rank_a1b2c3d4e5f6789012345678abcdef01")


def test_a_key_of_the_other_format_or_a_wrong_shape_is_refused_without_a_lookup():
    hex32 = ApiKeyFormat("sk_mcp_rank", "hex32")
    checksummed = ApiKeyFormat("sk_mcp_rank")
    assert not hex32.is_well_formed(checksummed.mint().key)
    assert not checksummed.is_well_formed(hex32.mint().key)
    for wrong in (
        "sk_mcp_rank_A1B2C3D4E5F6789012345678ABCDEF01",  # upper case
        "sk_mcp_rank_a1b2c3d4e5f6789012345678abcdef0",  # 31
        "sk_mcp_rank_a1b2c3d4e5f6789012345678abcdef012",  # 33
        "sk_mcp_rank_a1b2c3d4e5f6789012345678abcdef0g",
        "sk_mcp_a1b2c3d4e5f6789012345678abcdef01",
    ):
        assert not hex32.is_well_formed(wrong)


def test_the_config_accepts_the_hex32_format_and_an_underscored_prefix_and_refuses_an_unknown_format():
    ok = parse_config({"api_keys": {"prefix": "sk_mcp_rank", "format": "hex32"}})
    assert (ok.api_keys.prefix, ok.api_keys.format) == ("sk_mcp_rank", "hex32")
    with pytest.raises(ConfigError, match=r"api_keys\.format"):
        parse_config({"api_keys": {"format": "uuid"}})
    with pytest.raises(ConfigError, match=r"api_keys\.prefix"):
        parse_config({"api_keys": {"prefix": "sk_"}})
