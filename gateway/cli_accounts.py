"""The operator's view of accounts: ``users disable/enable/set-role``, ``apps list/revoke``, ``keys revoke``.

Revocations made here commit to the database, are audited (actor ``cli``) and announced on the bus
``gateway.cli`` passes in: Redis when ``redis.url`` is set (running replicas drop them at once), otherwise
this process's own, and running gateways drop their cached validations within the cache's bound (one second).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime

from gateway.account_actions import AccountActions
from gateway.accounts import Accounts
from gateway.audit import AuditLog
from gateway.authorized_apps import authorized_apps
from gateway.clock import SystemClock
from gateway.metrics import Metrics
from gateway.revocation import RevocationBus
from gateway.storage import ROLES, Storage
from gateway.text_safety import escape_unsafe


class CommandError(Exception):
    """Reported as ``error: <message>`` with exit status 2."""


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def cli_actions(storage: Storage, bus: RevocationBus, audit: AuditLog) -> AccountActions:
    return AccountActions(
        storage=storage,
        bus=bus,
        audit=audit,
        metrics=Metrics(),
        clock=SystemClock(),
        source="cli",
        actor="cli",
    )


async def run_user_admin(
    storage: Storage, accounts: Accounts, args: argparse.Namespace, bus: RevocationBus, audit: AuditLog
) -> None:
    """``users disable|enable|set-role``."""
    user = await accounts.require_user(args.email)
    actions = cli_actions(storage, bus, audit)
    if args.users_command == "disable":
        await actions.disable_user(user)
        print(f"disabled {escape_unsafe(user.email)}: its keys, tokens and sign-ins are refused")
    elif args.users_command == "enable":
        await actions.enable_user(user)
        print(f"enabled {escape_unsafe(user.email)}")
    elif args.users_command == "set-role":
        if args.role not in ROLES:
            raise CommandError(f"no role {args.role!r}; roles: {', '.join(ROLES)}")
        await storage.set_role(user.id, args.role)
        actions.audit.record("admin.action", actor="cli", reason=f"set-role {args.role}", user_id=user.id)
        print(f"{escape_unsafe(user.email)} is now {args.role}")


async def run_apps(
    storage: Storage, accounts: Accounts, args: argparse.Namespace, bus: RevocationBus, audit: AuditLog
) -> None:
    actions = cli_actions(storage, bus, audit)
    if args.apps_command == "list":
        user = await accounts.require_user(args.user)
        print(f"{'APP ID':<34} {'CLIENT':<40} {'FIRST APPROVED':<21} {'LAST USED':<21} SCOPES")
        for app in await authorized_apps(user.id, consents=storage, grants=storage):
            client = escape_unsafe(app.client_id + (f" ({app.installation})" if app.installation else ""))
            print(
                f"{app.id:<34} {client[:40]:<40} {_when(app.first_approved):<21} {_when(app.last_used):<21} "
                f"{escape_unsafe(' '.join(app.scopes))}"
            )
        return
    if args.user is None and args.client is None:
        raise CommandError("name --user EMAIL, --client CLIENT_ID, or both")
    if args.user:
        users = [await accounts.require_user(args.user)]
    else:
        found = [await storage.get_user(user_id) for user_id in await storage.users_of_client(args.client)]
        users = [user for user in found if user is not None]
    revoked = 0
    for user in users:
        for app in await authorized_apps(user.id, consents=storage, grants=storage):
            if args.client is None or app.client_id == args.client:
                await actions.revoke_app(user, app)
                revoked += 1
    print(f"revoked {revoked} app(s)")


async def run_key_revoke(storage: Storage, key_id: str, bus: RevocationBus, audit: AuditLog) -> None:
    key = await storage.get_api_key(key_id)
    if key is None or not await cli_actions(storage, bus, audit).revoke_key(key.user_id, key_id):
        raise CommandError(f"no active key with id {escape_unsafe(key_id)}")
    print(f"revoked key {escape_unsafe(key_id)}")


def add_commands(
    users: argparse._SubParsersAction[argparse.ArgumentParser],
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    command: Callable[..., argparse.ArgumentParser],
) -> None:
    """Add this module's commands to the parser built by ``gateway.cli.build_parser``."""
    for name, text in [
        ("disable", "disable an account: its keys, tokens and sign-ins are refused"),
        ("enable", "enable a disabled account"),
    ]:
        command(name, text, users).add_argument("email")
    p = command("set-role", f"give an account a role ({', '.join(ROLES)}); admins may use the admin API", users)
    p.add_argument("email")
    p.add_argument("role")
    apps = sub.add_parser("apps", help="authorized apps").add_subparsers(dest="apps_command", required=True)
    command("list", "an account's authorized apps", apps).add_argument("--user", required=True, metavar="EMAIL")
    p = command("revoke", "revoke apps: all of a user's, one client's for a user, or one client's everywhere", apps)
    p.add_argument("--user", metavar="EMAIL")
    p.add_argument("--client", metavar="CLIENT_ID")
