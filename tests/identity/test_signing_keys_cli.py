"""``mcp-gateway signing-keys`` as an operator uses it: generate an encryption key, rotate, list."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TIMEOUT = 60


def gw(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env=env,
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f"storage:\n  url: sqlite:///{tmp_path / 'gw.db'}\nidentity:\n  encryption_keys: ${{GATEWAY_SECRET_KEYS}}\n"
    )
    return path


def test_an_operator_generates_an_encryption_key_rotates_twice_and_lists_one_current_and_one_retired_key(
    config: Path,
) -> None:
    environ = {k: v for k, v in os.environ.items() if k != "MCP_GATEWAY_CONFIG"}
    secret = subprocess.run(
        [sys.executable, "-m", "gateway", "signing-keys", "generate-secret"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
        env=environ,
    )
    env = {**os.environ, "GATEWAY_SECRET_KEYS": secret.stdout.strip()}
    assert gw(config, "migrate", env=env).returncode == 0
    first = gw(config, "signing-keys", "rotate", env=env)
    second = gw(config, "signing-keys", "rotate", env=env)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    first_kid = first.stdout.split()[-1]
    second_kid = second.stdout.split()[-1]
    listing = gw(config, "signing-keys", "list", env=env).stdout.splitlines()
    assert [line.split()[0] for line in listing] == [first_kid, second_kid]
    assert "retired" in listing[0]
    assert "published until" in listing[0]
    assert "current" in listing[1]


def test_rotating_without_an_encryption_key_fails_with_a_clear_message(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"storage:\n  url: sqlite:///{tmp_path / 'gw.db'}\n")
    assert gw(config, "migrate").returncode == 0
    result = gw(config, "signing-keys", "rotate")
    assert result.returncode == 2
    assert "identity.encryption_keys" in result.stderr
    assert "Traceback" not in result.stderr
