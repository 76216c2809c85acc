"""The ``services:`` section: presets, a provider that must exist, an ``api_base`` the proxy may reach, headers
that may never be forwarded; every problem reported with its path."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config

PROVIDERS = {
    "google": {"client_id": "id", "client_secret": "s"},
    "github": {"client_id": "id", "client_secret": "s"},
    "corp": {"issuer": "https://sso.example.com", "client_id": "id", "client_secret": "s"},
}


def test_the_google_and_github_presets_need_nothing_but_their_provider() -> None:
    config = parse_config(
        {"identity_providers": PROVIDERS, "services": {"google": {"scopes": ["email"]}, "github": None}}
    )
    google, github = config.services.get("google"), config.services.get("github")
    assert google is not None
    assert github is not None
    assert (google.provider, google.api_base, google.scopes) == ("google", "https://www.googleapis.com", ("email",))
    assert (github.provider, github.api_base, github.methods) == ("github", "https://api.github.com", ("GET", "HEAD"))


@pytest.mark.parametrize(
    ("service", "problem"),
    [
        ({"provider": "nobody", "api_base": "https://api.example.com"}, "services.crm.provider: 'nobody' is not in"),
        ({"provider": "corp", "api_base": "http://api.example.com"}, "services.crm.api_base: expected an https://"),
        ({"provider": "corp", "api_base": "https://u:p@api.example.com"}, "services.crm.api_base: a host and optional"),
        ({"provider": "corp", "api_base": "https://api.example.com/a/../b"}, "services.crm.api_base: no dot segments"),
        ({"provider": "corp"}, "services.crm.api_base: required"),
        ({"provider": "corp", "api_base": "https://a.example", "methods": ["TRACE"]}, "services.crm.methods:"),
        (
            {"provider": "corp", "api_base": "https://a.example", "forward_headers": ["Cookie", "X-API-Key"]},
            "services.crm.forward_headers: Cookie, X-API-Key may never be forwarded",
        ),
        ({"provider": "corp", "api_base": "https://a.example", "colour": "red"}, "services.crm.colour: unknown key"),
    ],
)
def test_a_bad_service_is_reported_with_its_path(service: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config({"identity_providers": PROVIDERS, "services": {"crm": service}})
    assert any(p.startswith(problem) for p in refused.value.problems), refused.value.problems


def test_http_is_accepted_on_loopback_only() -> None:
    config = parse_config(
        {
            "identity_providers": PROVIDERS,
            "services": {"t": {"provider": "corp", "api_base": "http://127.0.0.1:8/api/"}},
        }
    )
    service = config.services.get("t")
    assert service is not None
    assert service.api_base == "http://127.0.0.1:8/api"
