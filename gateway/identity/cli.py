"""``mcp-gateway signing-keys …``: rotate and list the identity tokens' signing keys, make an encryption key."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime

from gateway.cli_accounts import CommandError
from gateway.clock import SystemClock
from gateway.config import GatewayConfig
from gateway.identity.sealing import generate_secret
from gateway.identity.signing_keys import SigningUnavailable
from gateway.identity.web import identity_services
from gateway.storage.identity import SigningKeyStore


def add_signing_key_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], command: Callable[..., argparse.ArgumentParser]
) -> None:
    keys = sub.add_parser("signing-keys", help="identity token signing keys")
    actions = keys.add_subparsers(dest="signing_keys_command", required=True)
    command("rotate", "make a new signing key current; the old one stays published until its tokens expire", actions)
    command("list", "list signing keys: id, created, retired, published until", actions)
    command("generate-secret", "print a new ID:KEY entry for identity.encryption_keys", actions)


async def run_signing_keys(
    config: GatewayConfig,
    args: argparse.Namespace,
    open_store: Callable[[], AbstractAsyncContextManager[SigningKeyStore]],
) -> None:
    if args.signing_keys_command == "generate-secret":
        print(generate_secret())
        return
    async with open_store() as store:
        keys = identity_services(config, store, SystemClock()).keys
        if args.signing_keys_command == "rotate":
            try:
                kid, deleted = await keys.rotate()
            except SigningUnavailable as exc:
                raise CommandError(str(exc)) from exc
            print(f"current signing key: {kid}" + (f" ({deleted} expired key(s) deleted)" if deleted else ""))
            return
        rows = await keys.all()
    for row in rows:
        until = "while current" if row.retired_at is None else _when(row.retired_at + keys.publication_window)
        state = "current" if row.current else f"retired {_when(row.retired_at)}"
        print(f"{row.kid}  {row.algorithm}  created {_when(row.created_at)}  {state}  published until {until}")


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
