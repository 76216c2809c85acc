"""API keys with minimal scopes from every surface: ``keys create --scope``, the dashboard's key form, the admin
API; each key then holds only its scopes on ``/mcp``, and a key without scopes keeps meaning everything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from gateway.storage import Storage
from tests.policy.conftest import POLICY
from tests.policy.scripted import all_tools, call, post
from tests.support.dashboard import account, create_key, sign_in
from tests.support.gateway import running_gateway
from tests.support.oauth_browser import Browser
from tests.support.scripted_upstream import ScriptedUpstream
from tests.test_cli import gw as cli


def test_keys_create_takes_repeatable_scopes_lists_them_and_refuses_an_unknown_one(tmp_path: Path):
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"storage": {"url": f"sqlite:///{tmp_path / 'gw.db'}"}, **POLICY}))
    assert cli(config, "migrate").returncode == 0
    assert cli(config, "users", "create", "ada@example.com", stdin="a long enough password\n").returncode == 0
    made = cli(config, "keys", "create", "--user", "ada@example.com", "--scope", "tools:read", "--scope", "tools:math")
    assert made.returncode == 0, made.stderr
    plain = cli(config, "keys", "create", "--user", "ada@example.com", "--name", "everything")
    assert plain.returncode == 0, plain.stderr
    listed = cli(config, "keys", "list").stdout
    assert "tools:read tools:math" in listed
    assert "(all)" in next(line for line in listed.splitlines() if "everything" in line)
    unknown = cli(config, "keys", "create", "--user", "ada@example.com", "--scope", "tools:everything")
    assert unknown.returncode == 2
    assert "unknown scope 'tools:everything'" in unknown.stderr


async def test_the_dashboard_key_form_makes_a_key_holding_only_the_scopes_typed(
    sqlite_storage: Storage, upstream_json: ScriptedUpstream
):
    async with running_gateway(storage=sqlite_storage, upstream_url=upstream_json.mcp_url, overrides=POLICY) as g:
        await g.new_user("ada@example.com")
        async with Browser(g.url) as browser:
            await sign_in(browser, "ada@example.com")
            form = await account(browser)
            assert 'name="scopes"' in form.text
            assert "Do arithmetic with the add tool" in form.text
            narrow = await create_key(browser, "narrow", scopes="tools:read")
            wide = await create_key(browser, "wide")
            listed = (await account(browser)).text
        assert "<code>tools:read</code>" in listed
        assert "everything" in listed
        assert (await all_tools(g, narrow))[0] == ["echo", "whoami"]
        assert (await all_tools(g, wide))[0] == ["add", "echo", "slow_count", "whoami"]
        assert (await post(g, narrow, call("add")))[0] == 403


async def _admin_post(browser: Browser, path: str, body: object) -> tuple[int, Any]:
    sent = {"Origin": browser.origin, "Content-Type": "application/json"}
    async with browser.session.post(browser.origin + path, data=json.dumps(body), headers=sent) as response:
        return response.status, json.loads(await response.read())


async def test_the_admin_api_creates_a_key_with_scopes_and_refuses_unknown_ones(
    sqlite_storage: Storage, upstream_json: ScriptedUpstream
):
    async with running_gateway(storage=sqlite_storage, upstream_url=upstream_json.mcp_url, overrides=POLICY) as g:
        admin = await g.new_user("root@example.com")
        await g.storage.set_role(admin.id, "admin")
        ada = await g.new_user("ada@example.com")
        async with Browser(g.url) as browser:
            await sign_in(browser, "root@example.com")
            status, made = await _admin_post(
                browser, f"/admin/api/users/{ada.id}/keys", {"name": "agent", "scopes": ["tools:math"]}
            )
            assert status == 200, made
            assert made["key"]["scopes"] == ["tools:math"]
            bad = await _admin_post(browser, f"/admin/api/users/{ada.id}/keys", {"name": "x", "scopes": ["root"]})
            assert bad[0] == 400
            assert "unknown scope 'root'" in bad[1]["error_description"]
        assert (await all_tools(g, made["secret"]))[0] == ["add", "echo", "whoami"]
        assert (await post(g, made["secret"], call("slow_count")))[0] == 403
