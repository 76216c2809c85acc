"""An API key's callback URLs: given at creation (``keys create --redirect-uri``, repeatable), checked like OAuth
redirect URIs before anything is created, and matched exactly except for a loopback port."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.identity.app_callbacks import CallbackUrlError, allows, checked_redirect_uris, key_app_for
from gateway.storage import open_storage
from gateway.storage.app_flow import KeyApp
from tests.test_cli import config, gw

__all__ = ["config"]


def _key_apps(config: Path) -> list[KeyApp | None]:
    async def read() -> list[KeyApp | None]:
        db = config.parent / "gw.db"
        storage = open_storage(f"sqlite:///{db}")
        await storage.open()
        try:
            return [await storage.get_key_app(key.id) for key in await storage.list_api_keys()]
        finally:
            await storage.close()

    return asyncio.run(read())


def test_keys_create_stores_every_redirect_uri_given_and_a_bad_one_creates_no_key(config: Path) -> None:
    assert gw(config, "migrate").returncode == 0
    assert gw(config, "users", "create", "ada@example.com", stdin="a long enough password\n").returncode == 0
    bad = gw(config, "keys", "create", "--user", "ada@example.com", "--redirect-uri", "https://app.example/cb#frag")
    assert bad.returncode == 2
    assert "callback URL" in bad.stderr
    assert _key_apps(config) == []
    made = gw(
        config,
        "keys",
        "create",
        "--user",
        "ada@example.com",
        "--redirect-uri",
        "https://app.example/cb",
        "--redirect-uri",
        "http://127.0.0.1/cb",
    )
    assert made.returncode == 0, made.stderr
    [key_app] = _key_apps(config)
    assert key_app is not None
    assert (key_app.redirect_uris, key_app.tokens_in_url) == (("https://app.example/cb", "http://127.0.0.1/cb"), False)


def test_the_tokens_in_url_option_states_its_risk_in_its_help(config: Path) -> None:
    shown = gw(config, "keys", "create", "--help")
    assert "--tokens-in-callback-url" in shown.stdout
    assert "RISK" in shown.stdout


@pytest.mark.parametrize(
    "uri",
    [
        "http://app.example/cb",
        "https://app.example/cb#x",
        "https://*.example/cb",
        "https://user@app.example/cb",
        "javascript:alert(1)",
        "https://app.example/c b",
    ],
)
def test_a_callback_url_that_oauth_would_refuse_is_refused(uri: str) -> None:
    with pytest.raises(CallbackUrlError):
        checked_redirect_uris([uri])


def test_matching_is_exact_except_for_the_port_of_a_loopback_url() -> None:
    app = key_app_for("key_1", ["https://app.example/cb", "http://127.0.0.1/cb"])
    assert allows(app, "https://app.example/cb")
    assert allows(app, "http://127.0.0.1:8123/cb")
    for other in (
        "https://app.example/cb/",
        "https://app.example/CB",
        "https://app.example:444/cb",
        "http://localhost/cb",
    ):
        assert not allows(app, other)
    assert not allows(None, "https://app.example/cb")
    with pytest.raises(CallbackUrlError):
        key_app_for("key_1", [], tokens_in_url=True)
