"""The ``mcp-gateway`` command: serve, migrate, users, keys, quickstart."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

from gateway import event_loop
from gateway.accounts import AccountError, Accounts
from gateway.apikeys import ApiKeyFormat
from gateway.app import create_app
from gateway.audit import AuditLog
from gateway.cli_accounts import CommandError, add_commands, run_apps, run_key_revoke, run_user_admin
from gateway.clock import SystemClock
from gateway.config import ConfigError, GatewayConfig, load_config, parse_workers, workers_problems
from gateway.flight.trace_cli import TraceError
from gateway.identity.app_callbacks import TOKENS_IN_URL_RISK, CallbackUrlError, key_app_for
from gateway.identity.cli import add_signing_key_commands, run_signing_keys
from gateway.logs import configure_logging
from gateway.passwords import Passwords, WeakPassword
from gateway.policy.keys import UnknownKeyScope, key_scope
from gateway.quota import make_limiter, quota_redis_client
from gateway.revocation import LocalRevocationBus, RevocationBus
from gateway.revocation_redis import RedisRevocationBus
from gateway.secrets_hashing import new_id
from gateway.server import serve, settle_heap
from gateway.storage import Storage, StorageError, open_storage
from gateway.text_safety import escape_unsafe
from gateway.vault.cli import add_vault_commands, run_vault
from gateway.workers import bind_listening_socket, supervise

CONFIG_ENV = "MCP_GATEWAY_CONFIG"


class DoctorFinished(Exception):
    """``doctor`` printed its findings; ``status`` is the exit status they call for."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class CliError(Exception):
    """Reported as ``error: <message>`` with exit status 2."""


def load(path: str | None) -> GatewayConfig:
    path = path or os.environ.get(CONFIG_ENV)
    return load_config(path) if path else GatewayConfig()


@contextlib.asynccontextmanager
async def opened_storage(config: GatewayConfig, *, check: bool = True) -> AsyncIterator[Storage]:
    storage = open_storage(
        config.storage.url,
        pool_min=1,
        pool_max=2,
        search_path=config.storage.schema,
        pgbouncer=config.storage.pgbouncer,
    )
    await storage.open()
    try:
        if check:
            await storage.check_schema()
        yield storage
    finally:
        await storage.close()


def accounts_for(config: GatewayConfig, storage: Storage) -> Accounts:
    return Accounts(
        users=storage,
        keys=storage,
        passwords=Passwords(),
        key_format=ApiKeyFormat(config.api_keys.prefix, config.api_keys.format),
        clock=SystemClock(),
    )


def audit_log(config: GatewayConfig) -> AuditLog:
    """The CLI's audit events go to stderr, with keys of the configured prefix redacted like the server's."""
    return AuditLog(api_key_prefix=config.api_keys.prefix)


def read_password(from_stdin: bool) -> str:
    if from_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        raise CliError("passwords do not match")
    return first


def when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


async def run_serve(config: GatewayConfig, host: str, port: int) -> None:
    app = create_app(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve(app, host, port) as running:
        settle_heap()
        ready = f"mcp-gateway listening on {running.url} (public URL {config.public_url}"
        print(f"{ready}; event loop {event_loop.loop_name(loop)})", file=sys.stderr)
        limits = running.connections.limits
        per_address = f"{limits.max_per_address} per address" if limits.max_per_address else "no per-address cap"
        print(
            f"mcp-gateway accepts at most {limits.max_connections} connections ({per_address}); request heads "
            f"within {limits.header_timeout:g} s, bodies idle at most {limits.body_timeout:g} s",
            file=sys.stderr,
        )
        await stop.wait()
        print("mcp-gateway shutting down: draining in-flight requests", file=sys.stderr)


async def run_migrate(config: GatewayConfig) -> None:
    async with opened_storage(config, check=False) as storage:
        applied = await storage.migrate()
    print(f"applied migrations: {', '.join(map(str, applied))}" if applied else "schema is up to date")


async def run_users(config: GatewayConfig, args: argparse.Namespace) -> None:
    async with opened_storage(config) as storage:
        accounts = accounts_for(config, storage)
        if args.users_command == "create":
            password = read_password(args.password_stdin)
            user = await accounts.create_user(args.email, password)
            audit_log(config).record("user.created", actor="cli", user_id=user.id)
            print(f"created user {escape_unsafe(user.email)} ({user.id})")
        elif args.users_command == "list":
            print(f"{'ID':<22} {'EMAIL':<40} {'PLAN':<12} {'CREATED':<21} STATUS")
            for user in await storage.list_users():
                status = "active" if user.active else f"disabled {when(user.disabled_at)}"
                email, plan = escape_unsafe(user.email), config.quota.plan_for(user.plan).name
                print(f"{user.id:<22} {email:<40} {plan:<12} {when(user.created_at):<21} {status}")
        elif args.users_command == "set-plan":
            if args.plan not in config.quota.plans:
                raise CliError(f"no plan {args.plan!r}; configured plans: {', '.join(sorted(config.quota.plans))}")
            user = await accounts.require_user(args.email)
            await storage.set_plan(user.id, args.plan)
            audit_log(config).record("user.plan_changed", actor="cli", user_id=user.id, plan=args.plan)
            print(f"{escape_unsafe(user.email)} is now on plan {escape_unsafe(args.plan)}")
        else:
            async with announcements(config) as bus:
                await run_user_admin(storage, accounts, args, bus, audit_log(config))


async def run_usage(config: GatewayConfig, email: str) -> None:
    """The account's plan, its current window counts and what remains (shared counters need ``redis.url``)."""
    async with opened_storage(config) as storage:
        user = await accounts_for(config, storage).require_user(email)
    plan = config.quota.plan_for(user.plan)
    print(f"{escape_unsafe(user.email)}: plan {escape_unsafe(plan.name)}")
    if plan.unlimited:
        print("  no limits")
        return
    if config.redis.url is None:
        print("  counters live inside the running gateway (embedded mode); set redis.url to share and inspect them")
        return
    redis = quota_redis_client(config.redis.url, timeout=config.quota.redis_timeout, cluster=config.redis.cluster)
    try:
        usage = await make_limiter(config.quota, clock=SystemClock(), redis=redis).usage(user.id, plan)
    finally:
        await redis.aclose()
    if usage.degraded:
        raise CliError("Redis is unreachable; the shared counters cannot be read")
    print(f"  {'WINDOW':<8} {'USED':>8} {'LIMIT':>8} {'REMAINING':>10} RESETS IN")
    for window in usage.windows:
        print(f"  {window.window:<8} {window.used:>8} {window.limit:>8} {window.remaining:>10} {window.reset_seconds}s")


async def run_keys(config: GatewayConfig, args: argparse.Namespace) -> None:
    async with opened_storage(config) as storage:
        accounts = accounts_for(config, storage)
        if args.keys_command == "create":
            user = await accounts.require_user(args.user)
            expires_in = args.expires_in_days * 86400.0 if args.expires_in_days is not None else None
            try:
                scope = key_scope(config.authorization, args.scope or [])
            except UnknownKeyScope as exc:
                raise CliError(str(exc)) from None
            key_id = new_id("key")
            try:
                key_app = key_app_for(key_id, args.redirect_uri, tokens_in_url=args.tokens_in_callback_url)
            except CallbackUrlError as exc:
                raise CliError(str(exc)) from exc
            row, minted = await accounts.create_key(
                user, name=args.name, expires_in=expires_in, key_id=key_id, scope=scope
            )
            if key_app is not None:
                await storage.set_key_app(key_app)
            audit_log(config).record("api_key.created", actor="cli", user_id=user.id, key_id=row.id)
            print(
                f"created key {row.id} for {escape_unsafe(user.email)}; copy it now, it will not be shown again:",
                file=sys.stderr,
            )
            print(minted.key)
        elif args.keys_command == "list":
            user_id = (await accounts.require_user(args.user)).id if args.user else None
            emails = {u.id: escape_unsafe(u.email) for u in await storage.list_users()}
            columns = f"{'ID':<22} {'KEY':<16} {'NAME':<20} {'USER':<30} {'CREATED':<21} {'LAST USED':<21}"
            print(f"{columns} {'STATUS':<8} SCOPES")
            now = time.time()
            for key in await storage.list_api_keys(user_id):
                shown, name = f"{key.display_prefix}…{key.last_four}", escape_unsafe(key.name)
                status = "revoked" if key.revoked_at else ("active" if key.usable_at(now) else "expired")
                print(
                    f"{key.id:<22} {shown:<16} {name[:20]:<20} {emails.get(key.user_id, '?')[:30]:<30} "
                    f"{when(key.created_at):<21} {when(key.last_used_at):<21} {status:<8} {key.scope or '(all)'}"
                )
        elif args.keys_command == "revoke":
            async with announcements(config) as bus:
                await run_key_revoke(storage, args.id, bus, audit_log(config))


@contextlib.asynccontextmanager
async def announcements(config: GatewayConfig) -> AsyncIterator[RevocationBus]:
    """Where the CLI announces what it revokes: on Redis when ``redis.url`` is set, so running replicas drop it at
    once; otherwise only in this process (running gateways then rely on their one-second validation cache)."""
    if config.redis.url is None:
        yield LocalRevocationBus()
        return
    bus = RedisRevocationBus(config.redis.url, config.redis.revocation_channel, config.redis.cluster)
    try:
        yield bus
    finally:
        await bus.close()


def worker_count(text: str) -> int:
    try:
        return parse_workers(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def serve_command(args: argparse.Namespace) -> int:
    """``serve``: one process, or a supervisor and ``--workers`` processes. Runs its own event loop(s), so that
    workers are forked from a process that holds none, on uvloop unless ``server.uvloop`` is false."""
    config = load(args.config)
    configure_logging(config.logging.level, config.logging.format)
    workers = args.workers or config.server.workers
    problems = workers_problems(config, workers)
    if problems:
        raise ConfigError(problems)
    if args.migrate:
        asyncio.run(run_migrate(config))
    host, port = args.host or config.server.host, args.port if args.port is not None else config.server.port
    if workers == 1:
        event_loop.run(run_serve(config, host, port), use_uvloop=config.server.uvloop)
        return 0
    try:
        sock = bind_listening_socket(host, port)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return supervise(config, sock, workers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcp-gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(
        name: str, help_text: str, parent: argparse._SubParsersAction[argparse.ArgumentParser] = sub
    ) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", metavar="PATH", help=f"YAML configuration (default: ${CONFIG_ENV}, else defaults)")
        return p

    p = command("serve", "run the gateway")
    p.add_argument("--host", help="listen address (default: server.host)")
    p.add_argument("--port", type=int, help="listen port (default: server.port)")
    p.add_argument("--migrate", action="store_true", help="apply pending migrations before serving")
    p.add_argument(
        "--workers", type=worker_count, metavar="N", help="gateway processes, or auto (default: server.workers)"
    )
    command("migrate", "apply pending database migrations")
    p = command("quickstart", "start the example upstream and the gateway on the embedded default, with a login")
    p.add_argument("--port", type=int, default=8080, help="gateway port (default 8080)")
    p.add_argument("--data-dir", default=".mcp-gateway", help="where the SQLite database lives")

    users = sub.add_parser("users", help="manage user accounts").add_subparsers(dest="users_command", required=True)
    p = command("create", "create a user (password from a prompt, or stdin when piped)", users)
    p.add_argument("email")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    command("list", "list users", users)
    p = command("set-plan", "put an account on a quota plan", users)
    p.add_argument("email")
    p.add_argument("plan")
    p = command("usage", "an account's plan, current counts and remaining quota")
    p.add_argument("email")

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_command", required=True)
    p = command("create", "create an API key; printed once", keys)
    p.add_argument("--user", required=True, metavar="EMAIL")
    p.add_argument("--name", default="default")
    p.add_argument("--expires-in-days", type=float, metavar="DAYS")
    p.add_argument("--scope", action="append", metavar="S", help="a scope the key holds (repeatable; none: everything)")
    p.add_argument(
        "--redirect-uri",
        action="append",
        default=[],
        metavar="URL",
        help="a callback URL of the app flow (/v1/auth/...); repeatable; exact match, loopback on any port",
    )
    p.add_argument(
        "--tokens-in-callback-url",
        action="store_true",
        help=f"deliver the tokens in the callback URL instead of a one-time code. RISK: {TOKENS_IN_URL_RISK}",
    )
    p = command("list", "list API keys (prefix and last four characters only)", keys)
    p.add_argument("--user", metavar="EMAIL")
    p = command("revoke", "revoke an API key by id", keys)
    p.add_argument("id")
    add_commands(users, sub, command)
    add_signing_key_commands(sub, command)
    add_vault_commands(sub, command)
    clients = sub.add_parser("clients", help="OAuth clients").add_subparsers(dest="clients_command", required=True)
    p = command("trace", "a client's recent connection steps (the flight recorder), with what to change", clients)
    p.add_argument("client_id", metavar="CLIENT_ID", help="a DCR client id or a CIMD client's URL")
    p.add_argument("--user", metavar="EMAIL", help="only this account's steps (any client)")
    p.add_argument("--json", action="store_true", help="JSON instead of lines")
    p = command("doctor", "check a deployment from outside and inside, and say what to fix")
    p.add_argument("--strict", action="store_true", help="warnings fail too (exit status 1)")
    return parser


async def dispatch(args: argparse.Namespace) -> None:
    config = load(args.config)
    if args.command == "doctor":
        from gateway.doctor import diagnose, exit_status, render

        findings = await diagnose(config, clock=SystemClock())
        print(render(findings))
        raise DoctorFinished(exit_status(findings, strict=args.strict))
    # Every command logs like the server does: account commands write their audit events to stderr.
    configure_logging(config.logging.level, config.logging.format)
    if args.command == "migrate":
        await run_migrate(config)
    elif args.command == "users":
        await run_users(config, args)
    elif args.command == "keys":
        await run_keys(config, args)
    elif args.command == "apps":
        async with opened_storage(config) as storage:
            async with announcements(config) as bus:
                await run_apps(storage, accounts_for(config, storage), args, bus, audit_log(config))
    elif args.command == "signing-keys":
        await run_signing_keys(config, args, lambda: opened_storage(config))
    elif args.command == "vault":
        await run_vault(config, args, lambda: opened_storage(config))
    elif args.command == "usage":
        await run_usage(config, args.email)
    elif args.command == "clients":
        from gateway.flight.trace_cli import run_trace

        async with opened_storage(config) as storage:
            await run_trace(config, storage, args)
    elif args.command == "quickstart":
        from gateway.quickstart import run_quickstart

        await run_quickstart(args.port, args.data_dir)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return serve_command(args)
        asyncio.run(dispatch(args))
    except ConfigError as exc:
        print(f"error: {escape_unsafe(str(exc))}", file=sys.stderr)
        return 2
    except (CliError, CommandError, AccountError, WeakPassword, TraceError) as exc:
        print(f"error: {escape_unsafe(str(exc))}", file=sys.stderr)
        return 2
    except StorageError as exc:
        print(f"error: storage: {escape_unsafe(str(exc))}", file=sys.stderr)
        return 1
    except DoctorFinished as finished:
        return finished.status
    except KeyboardInterrupt:
        return 130
    return 0
