"""The lean HTTP/1.1 client of the upstream hop (``gateway.proxy.http1``), against servers speaking HTTP/1.1 by hand.

Each test's server is a script run per accepted connection, so a test can produce what a well-behaved server
never would (a head that never ends, silence, a close in the middle of a body) and see exactly what was written.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from multidict import CIMultiDict

from gateway.proxy.http1 import (
    BodyBroken,
    BodyTimeout,
    ConnectionLost,
    ConnectionPools,
    ConnectTimeout,
    InvalidHeader,
    NoAnswer,
    NotSent,
    Pool,
    ProtocolError,
    Response,
)
from gateway.proxy.upstream import EndStream
from tests.support.https_server import make_local_ca, serve_https, silent_tcp_server

WAIT = 10.0
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


@dataclass
class Peer:
    """One accepted connection, as the server script sees it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def request(self) -> bytes | None:
        """The next request (head and body), or None when the client closed the connection."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        return head + await self.reader.readexactly(length)

    async def closed_by_client(self) -> bool:
        return await self.reader.read() == b""


Script = Callable[[Peer, "RawServer"], Awaitable[None]]


@dataclass
class RawServer:
    script: Script
    port: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    go_on: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by a test to let a script that waits go on."""
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by a script once it has closed a connection (or seen the client close it)."""
    serving: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.serving.add(task)
        try:
            await self.script(Peer(reader, writer), self)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.serving.discard(task)


@contextlib.asynccontextmanager
async def raw_server(script: Script) -> AsyncIterator[RawServer]:
    server = RawServer(script)
    listening = await asyncio.start_server(server._serve, "127.0.0.1", 0)
    server.port = listening.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listening.close()
        for task in list(server.serving):  # scripts still waiting on a client: end them and their connections
            task.cancel()
        await asyncio.gather(*server.serving, return_exceptions=True)
        await listening.wait_closed()


@contextlib.asynccontextmanager
async def pool_to(server: RawServer, **options: float) -> AsyncIterator[Pool]:
    pools = ConnectionPools(
        max_connections=int(options.pop("max_connections", 4)),
        connect_timeout=options.pop("connect_timeout", 5.0),
        **options,
    )
    pools.route(server.url)
    try:
        yield pools.route(server.url)[0]
    finally:
        await pools.close()


async def send(
    pool: Pool,
    method: str = "POST",
    body: bytes | None = b"{}",
    *,
    headers: CIMultiDict[str] | None = None,
    first_byte_timeout: float = WAIT,
    idle_timeout: float | None = WAIT,
    target: str = "/mcp",
) -> Response:
    return await pool.request(
        method,
        target,
        "upstream.test",
        CIMultiDict() if headers is None else headers,
        body,
        first_byte_timeout=first_byte_timeout,
        idle_timeout=idle_timeout,
    )


async def read_all(response: Response) -> bytes:
    body = b""
    while chunk := await response.content.readany():
        body += chunk
    return body


async def eventually(condition: Callable[[], bool]) -> None:
    """Let the event loop run until ``condition`` holds (it depends on callbacks already scheduled)."""
    async with asyncio.timeout(WAIT):
        while not condition():
            await asyncio.sleep(0)


async def answers_ok(peer: Peer, server: RawServer) -> None:
    while (request := await peer.request()) is not None:
        server.requests.append(request)
        peer.writer.write(OK)


async def test_sequential_requests_reuse_one_keep_alive_connection():
    async with raw_server(answers_ok) as server, pool_to(server) as pool:
        for _ in range(5):
            response = await send(pool)
            assert (response.status, response.content_type, response.content_length) == (200, "application/json", 2)
            assert await read_all(response) == b"{}"
            response.close()
    assert server.connections == 1
    assert len(server.requests) == 5


async def test_the_request_is_written_with_host_the_given_headers_and_a_content_length_only():
    async with raw_server(answers_ok) as server, pool_to(server) as pool:
        (await send(pool, headers=CIMultiDict({"Accept": "application/json", "X-Gateway-User": "u1"}))).close()
        (await send(pool, body=None)).close()
        (await send(pool, "GET", body=None, target="/sse?session_id=a%20b")).close()
    assert server.requests == [
        b"POST /mcp HTTP/1.1\r\nHost: upstream.test\r\nAccept: application/json\r\nX-Gateway-User: u1\r\n"
        b"Content-Length: 2\r\n\r\n{}",
        b"POST /mcp HTTP/1.1\r\nHost: upstream.test\r\nContent-Length: 0\r\n\r\n",
        b"GET /sse?session_id=a%20b HTTP/1.1\r\nHost: upstream.test\r\n\r\n",
    ]


async def test_a_header_with_cr_or_lf_is_refused_before_anything_is_written():
    async with raw_server(answers_ok) as server, pool_to(server) as pool:
        (await send(pool)).close()
        for name, value in [("X-Evil", "a\r\nInjected: yes"), ("X-Evil\n", "a"), ("X-Nul", "a\0b")]:
            with pytest.raises(InvalidHeader, match="X-"):
                await send(pool, headers=CIMultiDict({name: value}))
        response = await send(pool)
        assert await read_all(response) == b"{}"
        response.close()
    assert server.connections == 1
    assert len(server.requests) == 2
    assert all(b"Injected" not in r and b"\0" not in r for r in server.requests)


async def answers_and_closes(peer: Peer, server: RawServer) -> None:
    server.requests.append(await peer.request() or b"")
    peer.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    await peer.writer.drain()


async def test_an_answer_with_connection_close_is_not_reused():
    async with raw_server(answers_and_closes) as server, pool_to(server) as pool:
        for _ in range(2):
            response = await send(pool)
            assert await read_all(response) == b"{}"
            response.close()
    assert server.connections == 2


async def answers_then_closes_while_idle(peer: Peer, server: RawServer) -> None:
    server.requests.append(await peer.request() or b"")
    peer.writer.write(OK)  # keep-alive as far as the client can tell
    await peer.writer.drain()
    peer.writer.close()
    await peer.writer.wait_closed()
    server.closed.set()
    server.script = answers_ok


async def test_a_connection_the_server_closed_while_idle_is_not_reused_and_the_next_request_succeeds():
    async with raw_server(answers_then_closes_while_idle) as server, pool_to(server) as pool:
        response = await send(pool)
        assert await read_all(response) == b"{}"
        response.close()
        await asyncio.wait_for(server.closed.wait(), WAIT)
        await eventually(lambda: pool.idle_connections == 0)
        response = await send(pool)
        assert await read_all(response) == b"{}"
        response.close()
    assert server.connections == 2


async def test_a_connection_idle_past_the_expiry_is_not_reused():
    async with raw_server(answers_ok) as server, pool_to(server, idle_expiry=0.0) as pool:
        for _ in range(2):
            response = await send(pool)
            assert await read_all(response) == b"{}"
            response.close()
    assert server.connections == 2


async def streams_two_chunks(peer: Peer, server: RawServer) -> None:
    server.requests.append(await peer.request() or b"")
    peer.writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    peer.writer.write(b"7\r\nevent 1\r\n")
    await server.go_on.wait()
    peer.writer.write(b"7\r\nevent 2\r\n0\r\n\r\n")
    await answers_ok(peer, server)


async def test_a_chunked_body_reaches_the_reader_chunk_by_chunk_and_the_connection_is_reused():
    async with raw_server(streams_two_chunks) as server, pool_to(server) as pool:
        response = await send(pool, "GET", body=None)
        assert (response.content_type, response.content_length) == ("text/event-stream", None)
        assert await response.content.readany() == b"event 1"  # before the server has sent the second
        server.go_on.set()
        assert await read_all(response) == b"event 2"
        response.close()
        (await send(pool)).close()
    assert server.connections == 1


async def sends_half_a_body(peer: Peer, server: RawServer) -> None:
    server.requests.append(await peer.request() or b"")
    peer.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
    if await peer.closed_by_client():
        server.closed.set()
    server.script = answers_ok


async def test_a_body_not_read_to_the_end_closes_its_connection_which_is_never_reused():
    async with raw_server(sends_half_a_body) as server, pool_to(server) as pool:
        response = await send(pool)
        assert await response.content.readany() == b"12345"
        response.close()
        await asyncio.wait_for(server.closed.wait(), WAIT)  # the upstream sees its request cancelled
        response = await send(pool)
        assert await read_all(response) == b"{}"
        response.close()
    assert server.connections == 2


async def holds_the_first_answer(peer: Peer, server: RawServer) -> None:
    server.requests.append(await peer.request() or b"")
    await server.go_on.wait()
    peer.writer.write(OK)
    await answers_ok(peer, server)


async def test_callers_beyond_max_connections_wait_in_fifo_order_for_the_connection():
    async with raw_server(holds_the_first_answer) as server, pool_to(server, max_connections=1) as pool:
        first = asyncio.create_task(send(pool, target="/1"))
        await eventually(lambda: len(server.requests) == 1)
        later = [asyncio.create_task(send(pool, target=f"/{n}")) for n in (2, 3, 4)]
        await eventually(lambda: pool.waiting == 3)
        later[1].cancel()  # a caller that gives up leaves the queue
        server.go_on.set()
        response = await first
        assert await read_all(response) == b"{}"
        response.close()
        for task in (later[0], later[2]):
            response = await task
            assert await read_all(response) == b"{}"
            response.close()
        with pytest.raises(asyncio.CancelledError):
            await later[1]
    assert server.connections == 1
    assert [r.split(b" ")[1] for r in server.requests] == [b"/1", b"/2", b"/4"]


async def test_a_caller_waiting_for_a_connection_past_its_deadline_gets_connect_timeout_never_sent():
    async with raw_server(holds_the_first_answer) as server, pool_to(server, max_connections=1) as pool:
        first = asyncio.create_task(send(pool, target="/1"))
        await eventually(lambda: len(server.requests) == 1)
        with pytest.raises(ConnectTimeout):
            await send(pool, target="/2", first_byte_timeout=0.2)
        server.go_on.set()
        (await first).close()
    assert [r.split(b" ")[1] for r in server.requests] == [b"/1"]


async def test_a_refused_connection_is_a_never_sent_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/mcp"
    pools = ConnectionPools(max_connections=2, connect_timeout=5.0)
    pool = pools.route(url)[0]
    with pytest.raises(NotSent) as raised:
        await send(pool)
    assert not isinstance(raised.value, ConnectTimeout)
    with pytest.raises(NotSent):  # the failed attempt gave its slot back
        await send(pool)
    await pools.close()


async def never_answers(peer: Peer, server: RawServer) -> None:
    server.requests.append(await peer.request() or b"")
    if await peer.closed_by_client():
        server.closed.set()


async def test_no_answer_within_the_first_byte_timeout_is_no_answer_and_closes_the_connection():
    async with raw_server(never_answers) as server, pool_to(server) as pool:
        with pytest.raises(NoAnswer):
            await send(pool, first_byte_timeout=0.2)
        await asyncio.wait_for(server.closed.wait(), WAIT)
    assert len(server.requests) == 1


async def closes_before_answering(peer: Peer, server: RawServer) -> None:
    server.requests.append(await peer.request() or b"")


async def test_a_connection_closed_after_the_request_and_before_the_head_is_connection_lost():
    async with raw_server(closes_before_answering) as server, pool_to(server) as pool:
        with pytest.raises(ConnectionLost):
            await send(pool)


def endless_head(complete: bool) -> Script:
    async def script(peer: Peer, server: RawServer) -> None:
        server.requests.append(await peer.request() or b"")
        peer.writer.write(b"HTTP/1.1 200 OK\r\n")
        for n in range(10):  # 80 KiB of fields
            peer.writer.write(b"X-Padding-%d: %s\r\n" % (n, b"p" * 8192))
            await peer.writer.drain()
        if complete:
            peer.writer.write(b"Content-Length: 0\r\n\r\n")
        await peer.closed_by_client()

    return script


@pytest.mark.parametrize("complete", [True, False], ids=["complete", "never-ending"])
async def test_a_response_head_over_64_kib_is_a_protocol_error_not_a_hang(complete: bool):
    async with raw_server(endless_head(complete)) as server, pool_to(server) as pool:
        with pytest.raises(ProtocolError, match="too large"):
            await asyncio.wait_for(send(pool), WAIT)


def answers(raw: bytes) -> Script:
    async def script(peer: Peer, server: RawServer) -> None:
        server.requests.append(await peer.request() or b"")
        peer.writer.write(raw)
        await peer.closed_by_client()

    return script


async def test_an_interim_100_continue_is_skipped_and_a_101_or_garbage_is_a_protocol_error():
    async with raw_server(answers(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)) as server, pool_to(server) as pool:
        response = await send(pool)
        assert (response.status, await read_all(response)) == (200, b"{}")
        response.close()
    for raw in [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        b"SMTP 220\r\n\r\n",
    ]:
        async with raw_server(answers(raw)) as server, pool_to(server) as pool:
            with pytest.raises(ProtocolError):
                await send(pool)


async def test_a_close_delimited_body_ends_at_the_close_and_an_unfinished_one_is_broken():
    close_delimited = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it"
    async with raw_server(answers_and_closes_with(close_delimited)) as server, pool_to(server) as pool:
        response = await send(pool)
        assert (response.content_type, await read_all(response)) == ("application/octet-stream", b"all of it")
        response.close()
    cut_short = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nsome"
    async with raw_server(answers_and_closes_with(cut_short)) as server, pool_to(server) as pool:
        response = await send(pool)
        assert await response.content.readany() == b"some"  # what arrived is delivered, then the break
        with pytest.raises(BodyBroken):
            await response.content.readany()
        response.close()


def answers_and_closes_with(raw: bytes) -> Script:
    async def script(peer: Peer, server: RawServer) -> None:
        server.requests.append(await peer.request() or b"")
        peer.writer.write(raw)
        await peer.writer.drain()

    return script


async def test_a_large_body_arrives_whole_through_flow_control():
    body = bytes(range(256)) * 4096  # 1 MiB
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    async with raw_server(answers(head + body)) as server, pool_to(server) as pool:
        response = await send(pool)
        assert await read_all(response) == body
        response.close()


async def test_set_exception_wakes_a_pending_read_and_every_later_read_raises_it():
    async with raw_server(streams_two_chunks) as server, pool_to(server) as pool:
        response = await send(pool, "GET", body=None)
        assert await response.content.readany() == b"event 1"
        pending = asyncio.create_task(response.content.readany())
        await asyncio.sleep(0)  # one loop step: the read runs until it waits for data
        assert not pending.done()
        end = EndStream(b"event: error\n\n")
        response.content.set_exception(end)
        with pytest.raises(EndStream) as raised:
            await asyncio.wait_for(pending, WAIT)
        assert raised.value is end
        with pytest.raises(EndStream):
            await response.content.readany()
        response.close()


async def test_a_body_silent_past_the_idle_timeout_raises_body_timeout():
    async with raw_server(streams_two_chunks) as server, pool_to(server) as pool:
        response = await send(pool, "GET", body=None, idle_timeout=0.2)
        assert await response.content.readany() == b"event 1"
        with pytest.raises(BodyTimeout):
            await response.content.readany()
        response.close()


async def json_ok(request: web.Request) -> web.Response:
    return web.json_response({})


async def test_https_verifies_the_certificate_for_the_url_host_and_sends_it_as_server_name(tmp_path: Path):
    ca = make_local_ca(tmp_path)
    app = web.Application()
    app.router.add_post("/mcp", json_ok)
    async with serve_https(app, ca) as server:
        trusting = ConnectionPools(max_connections=2, connect_timeout=5.0, ssl_context=ca.client_context())
        for _ in range(2):
            pool, target, host = trusting.route(server.url("/mcp", host="localhost"))
            response = await pool.request(
                "POST", target, host, CIMultiDict(), b"{}", first_byte_timeout=WAIT, idle_timeout=WAIT
            )
            assert (response.status, await read_all(response)) == (200, b"{}")
            response.close()
        await trusting.close()
        assert (server.connections, server.server_names) == (1, ["localhost"])
        system_cas = ConnectionPools(max_connections=2, connect_timeout=5.0)  # the test CA is not among them
        with pytest.raises(NotSent):
            await send(system_cas.route(server.url("/mcp", host="localhost"))[0])
        await system_cas.close()


async def test_a_stalled_tls_handshake_is_a_connect_timeout_never_sent():
    async with silent_tcp_server() as port:
        pools = ConnectionPools(max_connections=2, connect_timeout=0.2)
        with pytest.raises(ConnectTimeout):
            await send(pools.route(f"https://127.0.0.1:{port}/mcp")[0])
        await pools.close()
