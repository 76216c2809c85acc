"""``mcp-gateway vault rotate-key``: re-seal every vault row under the current (first) ``identity.encryption_keys``
entry. Keep the old key listed until this has run on the database; then it can be removed."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from gateway.cli_accounts import CommandError
from gateway.clock import SystemClock
from gateway.config import GatewayConfig
from gateway.identity.sealing import EncryptionKeys
from gateway.storage.vault import VaultStore
from gateway.vault.vault import Vault, VaultLocked


def add_vault_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], command: Callable[..., argparse.ArgumentParser]
) -> None:
    vault = sub.add_parser("vault", help="the connected services' sealed provider tokens")
    actions = vault.add_subparsers(dest="vault_command", required=True)
    command("rotate-key", "re-encrypt every vault row under the first key of identity.encryption_keys", actions)


async def run_vault(
    config: GatewayConfig,
    args: argparse.Namespace,
    open_store: Callable[[], AbstractAsyncContextManager[VaultStore]],
) -> None:
    if not config.identity.encryption_keys:
        raise CommandError("identity.encryption_keys is not configured")
    keys = EncryptionKeys.parse(config.identity.encryption_keys)
    async with open_store() as store:
        try:
            count = await Vault(store, keys, SystemClock()).rotate_key()
        except VaultLocked as exc:
            raise CommandError(str(exc)) from exc
    print(f"re-encrypted {count} vault row(s) under encryption key {keys.current_id}")
