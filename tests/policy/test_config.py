"""The ``authorization:`` section: what it accepts, every problem reported by path, and how rules decide."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config
from gateway.policy.config import parse_authorization_config
from gateway.policy.match import Policy
from tests.policy.conftest import POLICY


def policy() -> Policy:
    return Policy(parse_config(POLICY).authorization)


def test_the_policys_scopes_become_oauth_scopes_with_their_sentences():
    config = parse_config(POLICY)
    assert config.oauth.scopes_supported == ("mcp:tools", "tools:read", "tools:math")
    assert config.authorization.scopes["tools:math"].implies == ("tools:read",)


def test_without_a_policy_everything_is_allowed_as_before():
    empty = Policy(parse_config({}).authorization)
    assert not empty.enabled
    assert empty.held("anything").everything


def test_the_first_matching_rule_decides_and_unmatched_targets_need_the_default():
    p = policy()
    assert p.need("tool", "add").rule == "math"
    assert p.need("tool", "whoami").scopes == ("tools:read",)
    assert p.need("tool", "slow_count").rule == "default"
    assert p.need("tool", "slow_count").scopes == ("mcp:tools",)
    assert p.need("resource", "info://server").rule == "reading"
    assert p.need("resource", "file:///etc").rule == "default"
    assert p.need("prompt", "summarize").rule == "reading"


def test_mcp_tools_and_a_credential_without_scopes_hold_everything_and_implied_scopes_are_held():
    p = policy()
    assert p.held("mcp:tools").everything
    assert p.held(None).everything
    math = p.held("tools:math")
    assert math.covers(p.need("tool", "echo"))
    assert math.covers(p.need("tool", "add"))
    assert not math.covers(p.need("tool", "slow_count"))
    assert not p.held("tools:read").covers(p.need("tool", "add"))
    assert not p.held("").covers(p.need("tool", "echo"))


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"scopes": {"mcp:tools": {"description": "x"}}}, "authorization.scopes.mcp:tools: not an acceptable"),
        ({"scopes": {"a:b": {}}}, "authorization.scopes.a:b: expected {description"),
        ({"scopes": {"a:b": {"description": "x", "implies": ["nope"]}}}, "implies[0]: unknown scope 'nope'"),
        ({"rules": [{"name": "r", "tools": ["*"], "scopes": ["nope"]}]}, "rules[0].scopes[0]: unknown scope"),
        ({"rules": [{"name": "R!", "tools": ["*"]}]}, "rules[0].name: 1-32 characters"),
        ({"rules": [{"name": "default", "tools": ["*"]}]}, "reserved name 'default'"),
        ({"rules": [{"name": "r", "scopes": []}]}, "rules[0]: name at least one of tools"),
        ({"rules": [{"name": "r", "tools": ["*"], "weight": -1}]}, "rules[0].weight: an integer from 0"),
        ({"rules": [{"name": "r", "tools": "*"}]}, "rules[0].tools: expected a list"),
        ({"default_scopes": ["nope"]}, "default_scopes[0]: unknown scope"),
        ({"colour": 1}, "authorization.colour: unknown key"),
    ],
)
def test_a_bad_policy_is_refused_with_the_path_of_each_problem(raw: dict[str, object], problem: str):
    _, problems = parse_authorization_config(raw)
    assert any(problem in p for p in problems), problems
    with pytest.raises(ConfigError):
        parse_config({"authorization": raw})


def test_oauth_default_scopes_may_name_a_policy_scope():
    assert parse_config(POLICY).oauth.default_scopes == ("tools:read",)
