"""Operator encryption keys: parsed with clear, secret-free errors; the first seals, every listed one unseals; a
blob moved to another row or sealed under a key no longer listed is refused."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config
from gateway.identity.sealing import EncryptionKeys, UnsealError, generate_secret


def test_the_first_key_seals_and_an_older_listed_key_still_unseals() -> None:
    old, new = generate_secret("k1"), generate_secret("k2")
    key_id, blob = EncryptionKeys.parse(old).seal(b"private", associated_data=b"sk_1")
    assert key_id == "k1"
    rotated = EncryptionKeys.parse(f"{new},{old}")
    assert rotated.current_id == "k2"
    assert rotated.unseal(key_id, blob, associated_data=b"sk_1") == b"private"
    with pytest.raises(UnsealError, match="corrupt or moved"):
        rotated.unseal(key_id, blob, associated_data=b"sk_2")
    with pytest.raises(UnsealError, match="not configured"):
        EncryptionKeys.parse(new).unseal(key_id, blob, associated_data=b"sk_1")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("k1:c2hvcnQ", "must be 32 bytes"),
        ("nocolon", "expected ID:KEY"),
        ("k1:" + "A" * 43 + ",k1:" + "B" * 43, "appears twice"),
    ],
)
def test_a_malformed_encryption_key_is_reported_by_path_without_echoing_it(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"identity": {"encryption_keys": value}})
    (problem,) = caught.value.problems
    assert problem.startswith("identity.encryption_keys: ")
    assert message in problem
    assert "A" * 43 not in problem
    assert "c2hvcnQ" not in problem


def test_the_identity_section_defaults_to_the_mcp_servers_audience_and_takes_keys_from_the_environment() -> None:
    secret = generate_secret("k9")
    config = parse_config(
        {"identity": {"encryption_keys": "${GATEWAY_SECRET_KEYS}"}}, env={"GATEWAY_SECRET_KEYS": secret}
    )
    assert config.identity.audience == "mcp-servers"
    assert EncryptionKeys.parse(config.identity.encryption_keys).current_id == "k9"
