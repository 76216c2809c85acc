"""``mcp-gateway serve --workers N`` as an operator runs it: real processes on one SQLite file (and Redis for the
quota), reached worker by worker (``tests/support/workers.py`` says how a test picks the worker it talks to)."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from gateway.accounts import Accounts
from gateway.apikeys import ApiKeyFormat
from gateway.clock import SystemClock
from gateway.config import ConfigError, parse_config, workers_problems
from gateway.passwords import Passwords
from gateway.storage import Storage, open_storage
from gateway.workers import Backoff
from tests.support.gateway import FAST_ARGON2, TEST_PASSWORD
from tests.support.oauth_browser import Browser
from tests.support.oauth_flows import EMAIL, INIT, MCP_HEADERS, REDIRECT_URI, OAuthApp, approve, bearer, new_pkce
from tests.support.replicas import REDIS_URL, delete_keys, free_port
from tests.support.scripted_upstream import ScriptedUpstream, json_ok, opens_session, scripted_upstream
from tests.support.upstream import REPO_ROOT
from tests.support.workers import served

pytestmark = pytest.mark.redis

WAIT = 60.0
"""Bound of every wait on the real processes (the machine is shared; this only stops a hung test)."""
REGISTRATION = {"redirect_uris": [REDIRECT_URI], "client_name": "Workers", "token_endpoint_auth_method": "none"}
REVOCATION_BOUND = 1.0
"""The promise: a revoked credential is refused by every worker within one second, Redis or not."""


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    storage = open_storage(f"sqlite:///{tmp_path / 'gw.db'}")
    await storage.open()
    try:
        await storage.migrate()
        yield storage
    finally:
        await storage.close()


@pytest.fixture
async def upstream() -> AsyncIterator[ScriptedUpstream]:
    async with scripted_upstream() as up:
        yield up


@pytest.fixture
async def tag() -> AsyncIterator[str]:
    tag = f"gwt{secrets.token_hex(6)}"
    yield tag
    await delete_keys(f"{tag}:*")


def config_for(
    tmp_path: Path, port: int, upstream: ScriptedUpstream, tag: str, *, redis: bool = True
) -> dict[str, Any]:
    return {
        "public_url": f"http://127.0.0.1:{port}",
        "upstream": {"url": upstream.mcp_url},
        "storage": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
        "redis": {"url": REDIS_URL, "revocation_channel": f"{tag}:revocations"} if redis else {},
        "quota": {"key_prefix": f"{tag}:q", "default_plan": "unlimited"},
        "logging": {"access_log": False, "level": "INFO", "format": "text"},
    }


def accounts(storage: Storage) -> Accounts:
    return Accounts(
        users=storage,
        keys=storage,
        passwords=Passwords(hasher=FAST_ARGON2),
        key_format=ApiKeyFormat("mgw"),
        clock=SystemClock(),
    )


async def new_key(storage: Storage, email: str = EMAIL, plan: str | None = None) -> tuple[str, str]:
    """A new account's API key: (its id, the key)."""
    user = await accounts(storage).create_user(email, TEST_PASSWORD)
    if plan is not None:
        await storage.set_plan(user.id, plan)
    row, minted = await accounts(storage).create_key(user, name="workers")
    return row.id, minted.key


async def mcp(session: aiohttp.ClientSession, url: str, key: str) -> int:
    async with asyncio.timeout(WAIT), session.post(url, data=INIT, headers={**MCP_HEADERS, **bearer(key)}) as reply:
        await reply.read()
        return reply.status


async def call(session: aiohttp.ClientSession, url: str, **body: Any) -> dict[str, Any]:
    """A JSON (``json=``) or form (``data=``) POST that must succeed; its JSON answer."""
    async with asyncio.timeout(WAIT), session.post(url, **body) as reply:
        answer = await reply.json()
        assert reply.status in (200, 201), answer
        return dict(answer)


async def get_text(session: aiohttp.ClientSession, url: str) -> str:
    async with asyncio.timeout(WAIT), session.get(url) as reply:
        assert reply.status == 200
        return await reply.text()


def sample(exposition: str, name: str, labels: str) -> float:
    match = re.search(rf"^{re.escape(name)}{{{re.escape(labels)}}} (\S+)$", exposition, re.MULTILINE)
    assert match, f"no {name}{{{labels}}} in /metrics"
    return float(match.group(1))


async def close_all(sessions: dict[int, aiohttp.ClientSession]) -> None:
    await asyncio.gather(*(session.close() for session in sessions.values()))


async def cli(config: Path, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, "--config", str(config),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT,
    )  # fmt: skip
    async with asyncio.timeout(WAIT):
        out, err = await process.communicate()
    return process.returncode or 0, out.decode() + err.decode()


async def test_two_workers_each_serve_requests_and_metrics_sum_their_counters(
    tmp_path: Path, storage: Storage, upstream: ScriptedUpstream, tag: str
):
    port = free_port()
    async with served(config_for(tmp_path, port, upstream, tag), tmp_path, port, "--workers", "2") as gw:
        assert "2 workers" in gw.ready_line
        sessions = await gw.pinned()  # one /healthz each
        try:
            assert len(sessions) == 2
            first, second = sessions.values()
            for _ in range(2):
                await get_text(first, f"{gw.url}/healthz")
            for _ in range(3):
                await get_text(second, f"{gw.url}/healthz")
            expositions = [await get_text(session, f"{gw.url}/metrics") for session in sessions.values()]
        finally:
            await close_all(sessions)
    for exposition in expositions:  # whichever worker answers, it reports both
        assert sample(exposition, "gateway_http_requests_total", 'method="GET",route="health",status="200"') == 7
        assert sample(exposition, "gateway_open_streams", 'transport="sse"') == 0  # live workers' sum, one series
        assert "pid=" not in exposition


async def test_one_sigterm_drains_the_requests_in_flight_on_every_worker_and_exits_0(
    tmp_path: Path, storage: Storage, upstream: ScriptedUpstream, tag: str
):
    _, key = await new_key(storage)
    release, arrived = asyncio.Event(), asyncio.Event()

    async def held(request: web.Request) -> web.StreamResponse:
        if len(upstream.requests) >= 2:
            arrived.set()
        await release.wait()
        return await json_ok(request)

    upstream.behaviour = held
    port = free_port()
    async with served(config_for(tmp_path, port, upstream, tag), tmp_path, port, "--workers", "2") as gw:
        sessions = await gw.pinned()
        try:
            calls = [asyncio.create_task(mcp(session, gw.mcp_url, key)) for session in sessions.values()]
            async with asyncio.timeout(WAIT):
                await arrived.wait()  # one request held upstream by each worker
            gw.process.send_signal(signal.SIGTERM)
            await until_refused(port)  # every process closed the listening socket: the drain has begun
            release.set()
            assert await asyncio.gather(*calls) == [200, 200]
        finally:
            await close_all(sessions)
        assert await gw.stop() == 0
    assert "could not start" not in gw.output()


async def until_refused(port: int) -> None:
    async with asyncio.timeout(WAIT):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except ConnectionRefusedError:
                return
            writer.close()
            await asyncio.sleep(0.05)  # polling real processes; the timeout bounds it


async def test_a_killed_worker_is_replaced_and_service_continues(
    tmp_path: Path, storage: Storage, upstream: ScriptedUpstream, tag: str
):
    port = free_port()
    async with served(config_for(tmp_path, port, upstream, tag), tmp_path, port, "--workers", "2") as gw:
        victim, survivor = sorted(await gw.until_workers(2))
        os.kill(victim, signal.SIGKILL)
        async with aiohttp.ClientSession() as http:
            assert "ok" in await get_text(http, f"{gw.url}/healthz")  # the survivor (or the replacement) answers
            workers = await gw.until_workers(2, other_than={victim})
            assert survivor in workers
            (replacement,) = workers - {survivor}
            with gw.only(replacement):
                async with aiohttp.ClientSession() as fresh:
                    await get_text(fresh, f"{gw.url}/healthz")
        async with asyncio.timeout(WAIT):
            while "killed by signal 9; replacing it" not in gw.output():
                await asyncio.sleep(0.05)  # the log line travels through a pipe; the timeout bounds it
        assert await gw.stop() == 0


async def test_workers_stop_when_their_supervisor_is_killed(
    tmp_path: Path, storage: Storage, upstream: ScriptedUpstream, tag: str
):
    port = free_port()
    async with served(config_for(tmp_path, port, upstream, tag), tmp_path, port, "--workers", "2") as gw:
        workers = await gw.until_workers(2)
        gw.process.kill()
        await gw.process.wait()
        async with asyncio.timeout(WAIT):
            while any(alive(pid) for pid in workers):
                await asyncio.sleep(0.05)  # polling real processes; the timeout bounds it
    assert "the supervisor is gone: stopping" in gw.output()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def test_oauth_and_api_keys_on_one_sqlite_file_work_across_workers(
    tmp_path: Path, storage: Storage, upstream: ScriptedUpstream, tag: str
):
    await accounts(storage).create_user(EMAIL, TEST_PASSWORD)
    _, key = await new_key(storage, "keys@example.com")
    port = free_port()
    async with served(config_for(tmp_path, port, upstream, tag), tmp_path, port, "--workers", "2") as gw:
        jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[URL(gw.url)])
        sessions = await gw.pinned(cookie_jar=jar)
        on_a, on_b = sessions.values()
        try:
            pkce = new_pkce()
            client_id = (await call(on_a, f"{gw.url}/register", json=REGISTRATION))["client_id"]
            app = OAuthApp(gw.url, client_id, REDIRECT_URI)
            browser = Browser(gw.url)  # its session: the one pinned to A, with the jar a browser would have
            browser.session = on_a
            redirect = await approve(browser, app.authorization_url(pkce), EMAIL)  # registered, approved on A ...
            code = {"grant_type": "authorization_code", "code": redirect.params["code"], "code_verifier": pkce.verifier}
            tokens = await call(
                on_b, f"{gw.url}/token", data={**code, "client_id": client_id, "redirect_uri": REDIRECT_URI}
            )
            assert await mcp(on_b, gw.mcp_url, tokens["access_token"]) == 200  # ... redeemed and used on B ...
            refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": client_id}
            refreshed = await call(on_a, f"{gw.url}/token", data=refresh)
            assert await mcp(on_a, gw.mcp_url, refreshed["access_token"]) == 200  # ... refreshed and used on A

            # Both workers write to the file (MCP session bindings) while the CLI creates a key in it.
            upstream.behaviour = opens_session

            async def traffic(session: aiohttp.ClientSession) -> list[int]:
                return [await mcp(session, gw.mcp_url, key) for _ in range(15)]

            statuses, (status, output) = await asyncio.gather(
                asyncio.gather(traffic(on_a), traffic(on_b)),
                cli(tmp_path / f"serve-{port}.yaml", "keys", "create", "--user", "keys@example.com"),
            )
            assert status == 0, output
            assert statuses == [[200] * 15, [200] * 15]
            created = next(line for line in output.splitlines() if line.startswith("mgw"))
            assert [await mcp(on_a, gw.mcp_url, created), await mcp(on_b, gw.mcp_url, created)] == [200, 200]
        finally:
            await close_all(sessions)


async def test_without_redis_a_revocation_reaches_every_worker_within_a_second(
    tmp_path: Path, storage: Storage, upstream: ScriptedUpstream, tag: str
):
    key_id, key = await new_key(storage)
    port = free_port()
    config = config_for(tmp_path, port, upstream, tag, redis=False)
    config["quota"] |= {"plans": {"free": {}}, "max_concurrent_streams": None}  # nothing a worker would multiply
    async with served(config, tmp_path, port, "--workers", "2") as gw:
        sessions = await gw.pinned()
        try:
            assert [await mcp(session, gw.mcp_url, key) for session in sessions.values()] == [200, 200]  # cached
            status, output = await cli(tmp_path / f"serve-{port}.yaml", "keys", "revoke", key_id)
            assert status == 0, output
            revoked_at = time.monotonic()
            delays = await asyncio.gather(*(refusal_delay(s, gw.mcp_url, key, revoked_at) for s in sessions.values()))
        finally:
            await close_all(sessions)
    print(f"refused by the two workers after {[round(d * 1000) for d in delays]} ms")
    assert max(delays) <= REVOCATION_BOUND


async def refusal_delay(session: aiohttp.ClientSession, url: str, key: str, since: float) -> float:
    async with asyncio.timeout(WAIT):
        while (status := await mcp(session, url, key)) == 200:
            await asyncio.sleep(0.01)  # pace the loop; the timeout bounds it
    assert status == 401
    return time.monotonic() - since


async def test_workers_without_redis_are_refused_while_a_plan_has_limits(tmp_path: Path):
    path = tmp_path / "gw.yaml"
    path.write_text(f"storage:\n  url: sqlite:///{tmp_path / 'gw.db'}\nserver:\n  workers: 2\n")
    for args in ((), ("--workers", "3")):
        status, output = await cli(path, "serve", "--port", "0", *args)
        assert status == 2
        workers = args[1] if args else "2"
        assert f"server.workers: {workers} workers without redis.url would each count the quota" in output
        assert "plan(s) free and quota.max_concurrent_streams" in output


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("uvloop", [True, False])
async def test_serve_runs_on_uvloop_unless_it_is_turned_off(
    tmp_path: Path, storage: Storage, upstream: ScriptedUpstream, tag: str, workers: str, uvloop: bool
):
    port = free_port()
    config = config_for(tmp_path, port, upstream, tag) | {"server": {"uvloop": uvloop}}
    loop = "uvloop" if uvloop else "asyncio"
    async with served(config, tmp_path, port, "--workers", workers) as gw:
        assert f"event loop {loop})" in gw.ready_line
        if workers == "2":
            async with asyncio.timeout(WAIT):
                while len(re.findall(rf"worker \d+ serving on {loop}$", gw.output(), re.MULTILINE)) < 2:
                    await asyncio.sleep(0.05)  # the log lines travel through a pipe; the timeout bounds it


def test_a_dead_worker_is_replaced_at_once_then_after_doubling_delays_while_it_keeps_dying_young():
    backoff = Backoff(first=0.5, maximum=30.0)
    assert [backoff.delay(n) for n in range(1, 9)] == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]


def test_workers_auto_is_the_cores_this_process_may_run_on():
    assert parse_config({"server": {"workers": "auto"}}).server.workers == len(os.sched_getaffinity(0))
    assert parse_config({}).server.workers == 1
    assert parse_config({}).server.uvloop is True


@pytest.mark.parametrize("value", [0, -1, "many", True, 1.5, 100_000])
def test_a_worker_count_that_is_neither_a_positive_integer_nor_auto_is_refused(value: object):
    with pytest.raises(ConfigError, match=r"server\.workers: expected auto or an integer from 1 to"):
        parse_config({"server": {"workers": value}})


def test_workers_without_redis_are_accepted_when_nothing_would_be_multiplied():
    unlimited = parse_config({"quota": {"plans": {"free": {}}, "max_concurrent_streams": None}})
    assert workers_problems(unlimited, 4) == []
    assert workers_problems(parse_config({"redis": {"url": REDIS_URL}}), 4) == []
    assert workers_problems(parse_config({}), 1) == []
    (streams_only,) = workers_problems(parse_config({"quota": {"plans": {"free": {}}}}), 4)
    assert "multiplying quota.max_concurrent_streams by 4;" in streams_only
    (both,) = workers_problems(parse_config({}), 4)
    assert "multiplying the caps of plan(s) free and quota.max_concurrent_streams by 4;" in both


async def test_an_address_already_in_use_is_an_error_not_a_traceback(tmp_path: Path):
    path = tmp_path / "gw.yaml"
    path.write_text("quota:\n  plans: {free: {}}\n  max_concurrent_streams: null\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, output = await cli(path, "serve", "--workers", "2", "--port", str(port))
    assert status == 2
    assert f"error: cannot listen on 127.0.0.1:{port}: Address already in use" in output
    assert "Traceback" not in output


async def test_a_worker_accepts_one_connection_per_turn_of_its_event_loop():
    from gateway.workers import TakingTurns

    with socket.create_server(("127.0.0.1", 0)) as shared:
        handle = TakingTurns.sharing(shared)
        handle.setblocking(False)
        clients = [socket.create_connection(shared.getsockname()[:2]) for _ in range(2)]
        try:
            first, _ = handle.accept()
            with pytest.raises(BlockingIOError):
                handle.accept()  # the rest wait for the next turn (or for a sibling)
            await asyncio.sleep(0)  # the loop turns
            second, _ = handle.accept()
            first.close()
            second.close()
        finally:
            handle.close()
            for client in clients:
                client.close()
