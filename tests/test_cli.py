"""The ``mcp-gateway`` command as an operator uses it: migrate, users, keys."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.storage import open_storage
from gateway.storage.base import ApiKey

TIMEOUT = 60


def gw(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--config", str(config)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(f"storage:\n  url: sqlite:///{tmp_path / 'gw.db'}\n")
    return path


def test_commands_refuse_to_run_on_an_unmigrated_database_and_say_how_to_fix_it(config: Path):
    result = gw(config, "users", "list")
    assert result.returncode != 0
    assert "mcp-gateway migrate" in result.stderr


def test_an_operator_creates_a_user_and_a_key_that_is_printed_once_and_listed_only_by_prefix(config: Path):
    assert gw(config, "migrate").returncode == 0
    assert "up to date" in gw(config, "migrate").stdout
    created = gw(config, "users", "create", "Ada@Example.com", stdin="a long enough password\n")
    assert created.returncode == 0, created.stderr
    assert "ada@example.com" in gw(config, "users", "list").stdout.lower()

    made = gw(config, "keys", "create", "--user", "ada@example.com", "--name", "laptop")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("mgw_")
    assert key not in made.stderr

    listed = gw(config, "keys", "list")
    assert key not in listed.stdout
    assert key[-4:] in listed.stdout
    assert key[:8] in listed.stdout
    assert "laptop" in listed.stdout
    key_id = next(line.split()[0] for line in listed.stdout.splitlines() if "laptop" in line)

    assert gw(config, "keys", "revoke", key_id).returncode == 0
    assert "revoked" in gw(config, "keys", "list").stdout
    again = gw(config, "keys", "revoke", key_id)
    assert again.returncode == 2
    assert "no active key" in again.stderr


def test_bad_input_gets_a_clear_error_and_a_nonzero_exit(config: Path):
    assert gw(config, "migrate").returncode == 0
    weak = gw(config, "users", "create", "bob@example.com", stdin="short\n")
    assert weak.returncode == 2
    assert "at least" in weak.stderr
    assert gw(config, "users", "create", "not-an-email", stdin="a long enough password\n").returncode == 2
    assert gw(config, "users", "create", "bob@example.com", stdin="a long enough password\n").returncode == 0
    dup = gw(config, "users", "create", "BOB@example.com", stdin="a long enough password\n")
    assert dup.returncode == 2
    assert "already exists" in dup.stderr
    missing = gw(config, "keys", "create", "--user", "nobody@example.com")
    assert missing.returncode == 2
    assert "no user" in missing.stderr


def test_an_invalid_configuration_is_reported_whole_before_anything_runs(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("upstream:\n  url: nope\n  colour: blue\nserver:\n  port: -1\n")
    result = gw(path, "migrate")
    assert result.returncode == 2
    for problem in ("upstream.url", "upstream.colour: unknown key", "server.port"):
        assert problem in result.stderr


def test_an_operator_puts_an_account_on_a_plan_and_reads_its_usage(config: Path):
    assert gw(config, "migrate").returncode == 0
    assert gw(config, "users", "create", "cy@example.com", stdin="a long enough password\n").returncode == 0
    assert "free" in gw(config, "users", "list").stdout
    unknown = gw(config, "users", "set-plan", "cy@example.com", "platinum")
    assert unknown.returncode == 2
    assert "configured plans" in unknown.stderr
    assert gw(config, "users", "set-plan", "cy@example.com", "unlimited").returncode == 0
    usage = gw(config, "usage", "cy@example.com")
    assert usage.returncode == 0
    assert "plan unlimited" in usage.stdout


def test_serve_refuses_weak_secrets_and_every_other_problem_at_once_with_a_nonzero_exit(tmp_path: Path):
    path = tmp_path / "weak.yaml"
    path.write_text("storage:\n  url: postgresql://gw:short@127.0.0.1/db\nredis:\n  url: ${NO_SUCH_REDIS_URL}\n")
    result = gw(path, "serve")
    assert result.returncode == 2
    assert "storage.url: the password is empty or weak" in result.stderr
    assert "redis.url: environment variable NO_SUCH_REDIS_URL is not set" in result.stderr
    assert "short" not in result.stderr.replace("shortly", "")


def test_serve_refuses_to_start_when_the_database_is_unreachable(tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "nodb.yaml"
    path.write_text(f"storage:\n  url: postgresql://postgres@127.0.0.1:{port}/test\n")
    result = gw(path, "serve", "--port", "0")
    assert result.returncode == 1
    assert "error: storage: PostgreSQL unreachable" in result.stderr


def test_account_commands_write_audit_events_to_stderr_without_the_key_or_password(config: Path):
    assert gw(config, "migrate").returncode == 0
    password = "a long enough password"
    created = gw(config, "users", "create", "grace@example.com", stdin=password + "\n")
    made = gw(config, "keys", "create", "--user", "grace@example.com")
    key = made.stdout.strip()
    key_id = next(line.split()[0] for line in gw(config, "keys", "list").stdout.splitlines()[1:])
    revoked = gw(config, "keys", "revoke", key_id)
    planned = gw(config, "users", "set-plan", "grace@example.com", "unlimited")
    events = [
        json.loads(line)
        for result in (created, made, revoked, planned)
        for line in result.stderr.splitlines()
        if line.startswith("{") and '"audit"' in line
    ]
    assert [event["audit"] for event in events] == [
        "user.created",
        "api_key.created",
        "api_key.revoked",
        "user.plan_changed",
    ]
    assert all(event["actor"] == "cli" for event in events)
    assert events[1]["key_id"] == events[2]["key_id"] == key_id
    assert events[3]["plan"] == "unlimited"
    everything = "".join(result.stderr for result in (created, made, revoked, planned))
    assert key not in everything
    assert password not in everything


def test_an_operator_disables_and_enables_a_user_and_gives_a_role(config: Path):
    assert gw(config, "migrate").returncode == 0
    assert gw(config, "users", "create", "ada@example.com", stdin="a long enough password\n").returncode == 0
    disabled = gw(config, "users", "disable", "ada@example.com")
    assert disabled.returncode == 0, disabled.stderr
    assert "disabled" in gw(config, "users", "list").stdout
    assert gw(config, "users", "enable", "ada@example.com").returncode == 0
    assert "active" in gw(config, "users", "list").stdout
    assert gw(config, "users", "set-role", "ada@example.com", "admin").returncode == 0
    bad = gw(config, "users", "set-role", "ada@example.com", "root")
    assert bad.returncode == 2
    assert "no role 'root'" in bad.stderr


def test_apps_revoke_needs_a_user_or_a_client_and_reports_what_it_revoked(config: Path):
    assert gw(config, "migrate").returncode == 0
    assert gw(config, "users", "create", "ada@example.com", stdin="a long enough password\n").returncode == 0
    listed = gw(config, "apps", "list", "--user", "ada@example.com")
    assert listed.returncode == 0, listed.stderr
    assert "CLIENT" in listed.stdout
    assert gw(config, "apps", "revoke").returncode == 2
    revoked = gw(config, "apps", "revoke", "--user", "ada@example.com", "--client", "cli_x")
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked 0 app(s)" in revoked.stdout
    assert gw(config, "apps", "list", "--user", "nobody@example.com").returncode == 2


def _store_unchecked_rows(database: Path) -> None:
    """An account and a key stored before names and addresses were checked (straight into the database)."""

    async def store() -> None:
        storage = open_storage(f"sqlite:///{database}")
        await storage.open()
        try:
            user = await storage.create_user(
                user_id="usr_old", email="\x1b[2Jold@example.com", password_hash="x", now=0
            )
            await storage.create_api_key(
                ApiKey("key_old", user.id, "\x1b]0;pwned\x07name", "h", "mgw_ab", "abcd", created_at=0.0)
            )
        finally:
            await storage.close()

    asyncio.run(store())


def test_an_address_with_a_terminal_escape_is_refused_and_old_rows_are_listed_escaped(config: Path):
    assert gw(config, "migrate").returncode == 0
    refused = gw(config, "users", "create", "\x1b[31mred@example.com", stdin="a long enough password\n")
    assert refused.returncode == 2
    assert "not a valid email address" in refused.stderr
    assert "\x1b" not in refused.stderr
    bidi = gw(config, "users", "create", "ev\u202eil@example.com", stdin="a long enough password\n")
    assert bidi.returncode == 2
    assert "\u202e" not in bidi.stderr

    _store_unchecked_rows(config.parent / "gw.db")
    users = gw(config, "users", "list")
    assert users.returncode == 0, users.stderr
    assert "\x1b" not in users.stdout
    assert "\\x1b[2Jold@example.com" in users.stdout
    keys = gw(config, "keys", "list")
    assert keys.returncode == 0, keys.stderr
    assert "\x1b" not in keys.stdout
    assert "\x07" not in keys.stdout
    assert "\\x1b]0;pwned" in keys.stdout
