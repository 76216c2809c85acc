"""Slow and many connections: read deadlines for heads and bodies, per-address and overall connection caps, and a
gateway that keeps answering ``/healthz`` (with a quiet log) while 1,100 slow connections are open under a low
open-file limit."""

from __future__ import annotations

import asyncio
import logging
import resource
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import ConfigError, parse_config
from gateway.connections import QuietLog
from gateway.server import FD_RESERVE, connection_limits
from gateway.storage import Storage
from tests.support.gateway import UNUSED_UPSTREAM, running_gateway
from tests.support.upstream import REPO_ROOT

SAFETY = 20.0
"""Bound on any wait below: a test that hangs fails instead (never a timing assertion)."""
PARTIAL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Slow: "

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
async def open_connections() -> AsyncIterator[list[Connection]]:
    """Raw client connections of the test, all closed afterwards."""
    opened: list[Connection] = []
    yield opened
    for _, writer in opened:
        writer.close()


async def connect(url: str, opened: list[Connection], *, source: str | None = None) -> Connection:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    local = (source, 0) if source else None
    conn = await asyncio.open_connection(host, int(port), local_addr=local)
    opened.append(conn)
    return conn


async def slow_connection(url: str, opened: list[Connection], *, source: str | None = None) -> Connection:
    reader, writer = await connect(url, opened, source=source)
    writer.write(PARTIAL_HEAD)
    await writer.drain()
    return reader, writer


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the gateway sends until it closes the connection."""
    async with asyncio.timeout(SAFETY):
        return await reader.read()


async def healthz(url: str, opened: list[Connection], *, source: str | None = None) -> bytes:
    reader, writer = await connect(url, opened, source=source)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
    return await until_closed(reader)


@pytest.fixture
async def gateway_with(sqlite_storage: Storage) -> Any:
    def start(server: Mapping[str, Any], trusted_proxies: Sequence[str] = ()) -> Any:
        overrides = {"server": server, "security": {"trusted_proxies": list(trusted_proxies)}}
        return running_gateway(storage=sqlite_storage, upstream_url=UNUSED_UPSTREAM, overrides=overrides)

    return start


async def test_a_client_that_sends_its_request_head_too_slowly_gets_408_and_is_disconnected(
    gateway_with: Any, open_connections: list[Connection]
) -> None:
    async with gateway_with({"header_timeout": 0.2}) as gw:
        reader, _ = await slow_connection(gw.url, open_connections)
        answer = await until_closed(reader)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"Connection: close" in answer


async def test_a_connection_that_never_sends_a_request_is_closed_after_the_header_timeout(
    gateway_with: Any, open_connections: list[Connection]
) -> None:
    async with gateway_with({"header_timeout": 0.2}) as gw:
        reader, _ = await connect(gw.url, open_connections)
        assert await until_closed(reader) == b""


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """One response with a ``Content-Length`` body, on a connection that stays open."""
    async with asyncio.timeout(SAFETY):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        return head + await reader.readexactly(length)


async def test_a_kept_alive_connection_serves_requests_that_arrive_in_time_and_408s_a_next_head_that_stalls(
    gateway_with: Any, open_connections: list[Connection]
) -> None:
    async with gateway_with({"header_timeout": 0.5}) as gw:
        reader, writer = await connect(gw.url, open_connections)
        for _ in range(2):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
            assert (await read_response(reader)).startswith(b"HTTP/1.1 200 ")
        writer.write(PARTIAL_HEAD)
        assert (await until_closed(reader)).startswith(b"HTTP/1.1 408 ")


FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


async def post_stalled(url: str, path: str, opened: list[Connection], content_type: str, headers: str = "") -> bytes:
    """A POST that announces 1,000 bytes of body and sends ten."""
    reader, writer = await connect(url, opened)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: gateway\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: 1000\r\n{headers}\r\n0123456789".encode()
    )
    return await until_closed(reader)


@pytest.mark.parametrize(
    ("path", "content_type"),
    [("/token", FORM), ("/register", JSON), ("/revoke", FORM), ("/login", FORM), ("/signup", FORM)],
)
async def test_a_request_body_that_stops_arriving_ends_with_408_and_a_closed_connection(
    gateway_with: Any, open_connections: list[Connection], path: str, content_type: str
) -> None:
    async with gateway_with({"body_timeout": 0.2}) as gw:
        answer = await post_stalled(gw.url, path, open_connections, content_type)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]


async def test_a_stalled_body_sent_to_mcp_ends_with_408(gateway_with: Any, open_connections: list[Connection]) -> None:
    async with gateway_with({"body_timeout": 0.2}) as gw:
        key = await gw.new_key(await gw.new_user())
        headers = f"Authorization: Bearer {key}\r\nAccept: application/json, text/event-stream\r\n"
        answer = await post_stalled(gw.url, "/mcp", open_connections, JSON, headers)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]


async def test_connections_past_the_per_address_cap_are_refused_while_another_address_is_served(
    gateway_with: Any, open_connections: list[Connection]
) -> None:
    async with gateway_with({"max_connections_per_address": 3, "header_timeout": 60}) as gw:
        for _ in range(3):
            await slow_connection(gw.url, open_connections, source="127.0.0.1")
        refused = await healthz(gw.url, open_connections, source="127.0.0.1")
        served = await healthz(gw.url, open_connections, source="127.0.0.2")
    assert refused == b""
    assert served.startswith(b"HTTP/1.1 200 ")


async def test_at_the_connection_cap_the_longest_waiting_connection_makes_room_for_a_new_one(
    gateway_with: Any, open_connections: list[Connection]
) -> None:
    limits = {"max_connections": 3, "max_connections_per_address": 0, "header_timeout": 60}
    async with gateway_with(limits) as gw:
        oldest, *_ = [await slow_connection(gw.url, open_connections) for _ in range(3)]
        served = await healthz(gw.url, open_connections)
        assert served.startswith(b"HTTP/1.1 200 ")
        assert await until_closed(oldest[0]) == b""


async def test_at_the_connection_cap_an_address_holding_many_connections_makes_room_not_a_light_one(
    gateway_with: Any, open_connections: list[Connection]
) -> None:
    limits = {"max_connections": 3, "max_connections_per_address": 0, "header_timeout": 60}
    async with gateway_with(limits) as gw:
        light = await slow_connection(gw.url, open_connections, source="127.0.0.1")
        heavy_oldest = await slow_connection(gw.url, open_connections, source="127.0.0.2")
        await slow_connection(gw.url, open_connections, source="127.0.0.2")
        await slow_connection(gw.url, open_connections, source="127.0.0.2")
        assert await until_closed(heavy_oldest[0]) == b""
        light[1].write(b"1\r\nConnection: close\r\n\r\n")  # the light client finishes its head: still served
        assert (await until_closed(light[0])).startswith(b"HTTP/1.1 200 ")


async def test_a_trusted_front_proxy_is_not_held_to_the_per_address_cap(
    gateway_with: Any, open_connections: list[Connection]
) -> None:
    async with gateway_with({"max_connections_per_address": 3, "header_timeout": 60}, ["127.0.0.1"]) as gw:
        for _ in range(3):
            await slow_connection(gw.url, open_connections, source="127.0.0.1")
        served = await healthz(gw.url, open_connections, source="127.0.0.1")
    assert served.startswith(b"HTTP/1.1 200 ")


def test_read_timeouts_must_be_positive_and_connection_caps_not_negative() -> None:
    server = {"header_timeout": 0, "body_timeout": -1, "keepalive_timeout": 0, "max_connections": -1}
    with pytest.raises(ConfigError) as raised:
        parse_config({"server": {**server, "max_connections_per_address": -1}})
    for key in [*server, "max_connections_per_address"]:
        assert any(problem.startswith(f"server.{key}:") for problem in raised.value.problems), key


def test_the_automatic_connection_cap_leaves_the_gateways_own_descriptors_free() -> None:
    config = parse_config({"upstream": {"max_connections": 100}, "storage": {"pool_max": 10}})
    assert connection_limits(config, open_files=1024).max_connections == 1024 - 100 - 10 - FD_RESERVE
    explicit = parse_config({"server": {"max_connections": 50}})
    assert connection_limits(explicit, open_files=1024).max_connections == 50


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_repeated_warnings_are_logged_once_per_interval_with_the_count_of_those_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    quiet = QuietLog(logging.getLogger("gateway.connections"), 10.0, clock)
    with caplog.at_level(logging.WARNING, logger="gateway.connections"):
        for _ in range(1000):
            quiet.warning("cannot accept connections: %s", "Too many open files")
        clock.now = 10.0
        quiet.warning("cannot accept connections: %s", "Too many open files")
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.connections"]
    assert lines == [
        "cannot accept connections: Too many open files",
        "cannot accept connections: Too many open files (999 similar events not logged)",
    ]


# --- the availability test of issue 11: a real `mcp-gateway serve` under `ulimit -n 1024` ---

OPEN_FILES = 1024
SLOW_CONNECTIONS = 1100
MAX_LOG_LINES = 100


def low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))


class ServedProcess:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._seen = asyncio.Condition()
        self._pump = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():
            async with self._seen:
                self.lines.append(line.decode(errors="replace"))
                self._seen.notify_all()

    async def wait_for_line(self, fragment: str) -> str:
        async with asyncio.timeout(SAFETY), self._seen:
            await self._seen.wait_for(lambda: self.saw(fragment))
        return next(line for line in self.lines if fragment in line)

    def saw(self, fragment: str) -> bool:
        return any(fragment in line for line in self.lines)

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()
        await self._pump


@pytest.fixture
async def serve_process(tmp_path: Path) -> AsyncIterator[Any]:
    started: list[ServedProcess] = []

    async def start(server: Mapping[str, Any]) -> tuple[ServedProcess, str]:
        config = {
            "server": {"host": "127.0.0.1", "port": 0, **server},
            "upstream": {"url": UNUSED_UPSTREAM},
            "storage": {"url": f"sqlite:///{tmp_path / 'gateway.db'}"},
            "logging": {"format": "text"},
        }
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(config))
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "serve", "--migrate", "--config", str(path),
            cwd=REPO_ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            preexec_fn=low_fd_limit,
        )  # fmt: skip
        served = ServedProcess(process)
        started.append(served)
        ready = await served.wait_for_line("mcp-gateway listening on ")
        return served, ready.split("listening on ", 1)[1].split()[0]

    yield start
    for served in started:
        await served.stop()


async def open_slow_connections(url: str, opened: list[Connection], sources: int) -> None:
    for i in range(SLOW_CONNECTIONS):
        await slow_connection(url, opened, source=f"127.0.0.{2 + i % sources}")


async def test_the_gateway_answers_healthz_while_1100_slow_connections_are_open_under_ulimit_1024(
    serve_process: Any, open_connections: list[Connection]
) -> None:
    served, url = await serve_process({"header_timeout": 60, "max_connections_per_address": 0})
    await open_slow_connections(url, open_connections, sources=1)
    answer = await healthz(url, open_connections, source="127.0.0.2")
    assert answer.startswith(b"HTTP/1.1 200 ")
    await served.stop()
    assert len(served.lines) < MAX_LOG_LINES, "".join(served.lines[:20])


async def test_with_default_limits_slow_connections_from_a_few_addresses_do_not_stop_healthz(
    serve_process: Any, open_connections: list[Connection]
) -> None:
    served, url = await serve_process({"header_timeout": 60})
    await open_slow_connections(url, open_connections, sources=4)
    answer = await healthz(url, open_connections, source="127.0.0.1")
    assert answer.startswith(b"HTTP/1.1 200 ")
    await served.stop()
    assert len(served.lines) < MAX_LOG_LINES, "".join(served.lines[:20])


async def test_when_file_descriptors_run_out_the_log_stays_quiet_and_the_gateway_recovers_when_they_free_up(
    serve_process: Any, open_connections: list[Connection]
) -> None:
    # A cap above the open-file limit: accept() itself fails with EMFILE.
    limits = {"header_timeout": 60, "max_connections": 5000, "max_connections_per_address": 0}
    served, url = await serve_process(limits)
    for _ in range(SLOW_CONNECTIONS):  # until accept() fails (more would wait on a full listen backlog)
        await slow_connection(url, open_connections)
        if served.saw("cannot accept connections"):
            break
    await served.wait_for_line("cannot accept connections")
    for _, writer in open_connections:
        writer.close()
    open_connections.clear()
    answer = await healthz(url, open_connections)
    assert answer.startswith(b"HTTP/1.1 200 ")
    await served.stop()
    assert len(served.lines) < MAX_LOG_LINES, "".join(served.lines[:20])
