"""The audit log's last guard against secrets: every shape of the gateway's secrets, with the configured key prefix."""

from __future__ import annotations

import logging

import pytest

from gateway.apikeys import ApiKeyFormat
from gateway.app import create_app
from gateway.audit import AUDIT, REDACTED, TOKEN_PREFIXES, AuditLog
from gateway.config import parse_config
from gateway.oauth.token_formats import TokenType, mint
from gateway.secrets_hashing import new_id


def recorded(audit: AuditLog, caplog: pytest.LogCaptureFixture, **fields: str) -> logging.LogRecord:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="gateway.audit"):
        audit.record("admin.action", actor="cli", **fields)
    (record,) = caplog.records
    return record


def test_the_audit_filter_redacts_a_key_with_the_configured_prefix_and_keeps_ids(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = parse_config({"public_url": "https://gw.example", "api_keys": {"prefix": "acme"}})
    audit = create_app(config)[AUDIT]
    key = ApiKeyFormat("acme").mint().key
    record = recorded(audit, caplog, reason=key, detail=f"pasted: {key}", key_id=new_id("key"))
    assert record.reason == REDACTED
    assert record.detail == REDACTED
    assert record.key_id.startswith("key_")


def test_a_prefix_equal_to_an_id_prefix_hides_keys_but_not_ids(caplog: pytest.LogCaptureFixture) -> None:
    audit = AuditLog(api_key_prefix="key")
    key_id, key = new_id("key"), ApiKeyFormat("key").mint().key
    record = recorded(audit, caplog, key_id=key_id, reason=key)
    assert record.key_id == key_id
    assert record.reason == REDACTED


@pytest.mark.parametrize("kind", list(TokenType))
def test_tokens_bearer_credentials_and_password_hashes_are_redacted(
    kind: TokenType, caplog: pytest.LogCaptureFixture
) -> None:
    token, _ = mint(kind)
    record = recorded(AuditLog(), caplog, reason=token, detail=f"Authorization: Bearer {token}", hash="$argon2id$v")
    assert (record.reason, record.detail, record.hash) == (REDACTED, REDACTED, REDACTED)


def test_the_guard_knows_every_token_prefix() -> None:
    assert set(TOKEN_PREFIXES) == {kind.value for kind in TokenType}
