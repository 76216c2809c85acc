"""``upstream.identity_header`` and ``upstream.identity_audience``: a header a client could set, or an audience an
app's identity token also carries, is a configuration error."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config


def test_the_defaults_send_x_mcp_identity_for_the_upstream_s_origin() -> None:
    config = parse_config({})
    assert config.upstream.identity_header == "X-MCP-Identity"
    assert config.upstream.identity_audience is None


@pytest.mark.parametrize("header", [None, ""])
def test_the_identity_header_can_be_turned_off(header: str | None) -> None:
    assert not parse_config({"upstream": {"identity_header": header}}).upstream.identity_header


@pytest.mark.parametrize(
    ("upstream", "problem"),
    [
        ({"identity_header": "X-MCP-Identity", "forward_headers": ["x-mcp-identity"]}, "forward_headers"),
        ({"identity_header": "X_MCP_Identity"}, "upstream.identity_header"),
        ({"identity_header": "X-Gateway-Identity"}, "upstream.identity_header"),
        ({"identity_header": "Authorization"}, "upstream.identity_header"),
        ({"identity_header": "Mcp-Session-Id"}, "upstream.identity_header"),
        ({"identity_audience": "mcp-servers"}, "must differ from identity.audience"),
        ({"identity_audience": "two words"}, "upstream.identity_audience"),
    ],
)
def test_a_header_a_client_could_set_or_the_apps_audience_is_refused(upstream: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_config({"upstream": upstream})
