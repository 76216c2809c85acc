"""The YAML configuration: typed, validated, every problem reported at once with its path."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, GatewayConfig, load_config, parse_config

EXAMPLE = Path(__file__).parent.parent / "config" / "gateway.example.yaml"


def test_the_example_configuration_loads_as_it_is_once_its_variables_are_set():
    config = load_config(EXAMPLE, env={"GATEWAY_PUBLIC_URL": "https://MCP.Example.com/"})
    assert config.public_url == "https://mcp.example.com"
    assert config.mcp_resource == "https://mcp.example.com/mcp"
    assert config.issuer == "https://mcp.example.com"


def test_every_key_of_the_example_matches_the_defaults_in_code():
    assert load_config(EXAMPLE, env={}) == parse_config({"upstream": {"sse_url": "http://127.0.0.1:9000/sse"}}, env={})


def test_an_empty_file_gives_the_defaults(tmp_path: Path):
    (tmp_path / "c.yaml").write_text("")
    assert load_config(tmp_path / "c.yaml", env={}) == GatewayConfig()


def test_every_problem_is_reported_at_once_with_its_path():
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "public_url": "ftp://x",
                "upstream": {"connect_timeout": "soon", "bogus": 1},
                "storage": {"url": "mysql://x"},
                "server": {"port": 70000},
                "api_keys": {"prefix": "Bad Prefix"},
                "surprise": True,
            },
            env={},
        )
    problems = "\n".join(caught.value.problems)
    for expected in (
        "public_url: expected an http:// or https:// URL",
        "upstream.connect_timeout: expected a number",
        "upstream.bogus: unknown key",
        "storage.url: expected sqlite:///PATH or postgresql://...",
        "server.port: must be at most 65535",
        "api_keys.prefix:",
        "surprise: unknown key",
    ):
        assert expected in problems


def test_environment_references_are_substituted_and_a_missing_one_is_reported_with_its_path():
    config = parse_config({"storage": {"url": "${DB}"}}, env={"DB": "postgresql://u@h/db"})
    assert config.storage.url == "postgresql://u@h/db"
    with pytest.raises(ConfigError) as caught:
        parse_config({"redis": {"url": "${REDIS_URL}"}}, env={})
    assert caught.value.problems == ["redis.url: environment variable REDIS_URL is not set"]


def test_booleans_are_not_numbers_and_numbers_are_not_strings():
    with pytest.raises(ConfigError) as caught:
        parse_config({"server": {"port": True}, "logging": {"level": 3, "access_log": "yes"}}, env={})
    assert set(caught.value.problems) == {
        "server.port: expected an integer",
        "logging.level: expected a string",
        "logging.access_log: expected true or false",
    }


def test_a_url_with_credentials_is_refused():
    with pytest.raises(ConfigError, match="must not contain credentials"):
        parse_config({"upstream": {"url": "http://user:pw@upstream/mcp"}}, env={})


def test_invalid_yaml_is_reported_clearly(tmp_path: Path):
    (tmp_path / "c.yaml").write_text("public_url: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "c.yaml", env={})


def test_weak_or_empty_passwords_in_service_urls_are_refused_without_being_echoed():
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "storage": {"url": "postgresql://gw:hunter2@db.internal/gateway"},
                "redis": {"url": "redis://:@cache.internal:6379/0"},
            },
            env={},
        )
    text = str(caught.value)
    assert "storage.url: the password is empty or weak" in text
    assert "redis.url: the password is empty or weak" in text
    assert "hunter2" not in text
    strong = "x7Gv2QpL9sZk4WmN"
    config = parse_config({"storage": {"url": f"postgresql://gw:{strong}@db.internal/gateway"}}, env={})
    assert config.storage.url.endswith("@db.internal/gateway")


def test_revocation_and_replica_settings_are_validated():
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "storage": {"schema": "gateway"},
                "redis": {"revocation_channel": "bad channel!"},
                "revocation": {"stream_recheck_interval": 2},
            },
            env={},
        )
    assert caught.value.problems == [
        "redis.revocation_channel: 1-128 characters: letters, digits, and . _ : -",
        "storage.schema: only applies to PostgreSQL",
        "revocation.stream_recheck_interval: greater than 0 and at most 0.5 seconds",
    ]
    config = parse_config({"storage": {"url": "postgresql://gw@db/gateway", "schema": "mcp_gateway"}}, env={})
    assert config.storage.schema == "mcp_gateway"


def test_a_short_metrics_bearer_token_is_refused_with_its_path():
    with pytest.raises(ConfigError) as caught:
        parse_config({"metrics": {"bearer_token": "short", "enabled": "yes"}}, env={})
    problems = "\n".join(caught.value.problems)
    assert "metrics.enabled: expected true or false" in problems
    assert parse_config({"metrics": {"bearer_token": "${T}"}}, env={"T": "x" * 16}).metrics.bearer_token == "x" * 16
    with pytest.raises(ConfigError) as short:
        parse_config({"metrics": {"bearer_token": "short"}}, env={})
    assert short.value.problems == ["metrics.bearer_token: use at least 16 characters (or leave it empty)"]


def test_allowed_email_domains_must_be_domains_and_passwords_off_needs_a_provider():
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {"accounts": {"allowed_email_domains": ["corp.example", "@corp.example", ""], "local_passwords": False}}
        )
    problems = "\n".join(caught.value.problems)
    assert "accounts.allowed_email_domains[1]" in problems
    assert "accounts.allowed_email_domains[2]" in problems
    assert "accounts.allowed_email_domains[0]" not in problems
    assert "accounts.local_passwords: false needs at least one identity_providers entry" in problems
    provider = {"issuer": "https://sso.corp.example", "client_id": "gw", "client_secret": "s3cret"}
    config = parse_config({"accounts": {"local_passwords": False}, "identity_providers": {"corp": provider}})
    assert config.accounts.local_passwords is False
