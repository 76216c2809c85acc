"""``identity_providers``: presets for Google and GitHub, generic OpenID providers by issuer, plain OAuth 2 by
endpoints; secrets through ``${ENV}``; every problem reported with its path."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config


def test_google_and_github_presets_need_only_the_client_and_a_generic_provider_its_issuer() -> None:
    config = parse_config(
        {
            "identity_providers": {
                "google": {"client_id": "g", "client_secret": "${GOOGLE_SECRET}"},
                "github": {"client_id": "h", "client_secret": "s"},
                "corp": {"issuer": "https://sso.example.com/realms/corp", "client_id": "c", "client_secret": "s"},
            }
        },
        env={"GOOGLE_SECRET": "from-the-environment"},
    )
    google = config.identity_providers.get("google")
    github = config.identity_providers.get("github")
    corp = config.identity_providers.get("corp")
    assert google is not None
    assert github is not None
    assert corp is not None
    assert google.client_secret == "from-the-environment"
    assert google.oidc
    assert dict(google.authorization_params) == {"access_type": "offline", "prompt": "consent"}
    assert not github.oidc
    assert github.emails_endpoint == "https://api.github.com/user/emails"
    assert (corp.oidc, corp.scopes, corp.display_name) == (True, ("openid", "email", "profile"), "corp")


def test_every_provider_problem_is_reported_with_its_path() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "identity_providers": {
                    "google": {"client_id": "g"},
                    "corp": {"issuer": "http://sso.example.com", "client_id": "c", "client_secret": "s", "x": 1},
                    "legacy": {"authorization_endpoint": "https://l/a", "client_id": "c", "client_secret": "s"},
                    "params": {
                        "preset": "google",
                        "client_id": "c",
                        "client_secret": "s",
                        "authorization_params": {"state": "fixed"},
                    },
                }
            },
            env={},
        )
    problems = "\n".join(caught.value.problems)
    assert "identity_providers.google.client_secret: required" in problems
    assert "identity_providers.corp.x: unknown key" in problems
    assert "identity_providers.corp.issuer: expected an https:// URL" in problems
    assert "identity_providers.legacy: give an issuer" in problems
    assert "identity_providers.params.authorization_params: the gateway sets state" in problems


def test_a_provider_by_issuer_without_the_openid_scope_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "identity_providers": {
                    "corp": {
                        "issuer": "https://sso.example.com",
                        "client_id": "c",
                        "client_secret": "s",
                        "scopes": ["email"],
                    }
                }
            },
            env={},
        )
    assert caught.value.problems == [
        "identity_providers.corp.scopes: include openid for discovery by issuer, or give the endpoints"
    ]
