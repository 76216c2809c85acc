"""The SSE list filter fed in awkward pieces: one byte at a time, CR LF split across chunks, other events intact."""

from __future__ import annotations

import json

import pytest

from gateway.config import parse_config
from gateway.policy.filter import SseFilter
from gateway.policy.match import Policy
from gateway.proxy.upstream import EndStream
from tests.policy.conftest import POLICY


def stream() -> bytes:
    listed = {"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": "add"}, {"name": "echo"}]}}
    progress = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}
    return (
        b": keep-alive\r\n\r\nevent: message\r\nid: 1\r\ndata: "
        + json.dumps(progress).encode()
        + b"\r\n\r\nevent: message\r\nid: 2\r\ndata: "
        + json.dumps(listed).encode()
        + b"\r\n\r\n"
    )


@pytest.mark.parametrize("size", [1, 2, 7, 4096])
async def test_events_split_anywhere_come_out_whole_with_only_the_allowed_tools(size: int):
    policy = Policy(parse_config(POLICY).authorization)
    sse_filter = SseFilter(policy, policy.held("tools:read"))
    raw = stream()
    out = b"".join([await sse_filter(raw[i : i + size]) for i in range(0, len(raw), size)])
    events = out.decode().split("\n\n")
    assert events[0] == ": keep-alive"
    assert json.loads(events[1].split("data: ")[1])["method"] == "notifications/progress"
    assert events[2].startswith("event: message\nid: 2\ndata: ")
    answer = json.loads(events[2].split("data: ")[1])
    assert answer["result"] == {"tools": [{"name": "echo"}], "cacheScope": "private"}
    assert events[3] == ""


async def test_an_event_larger_than_the_cap_ends_the_stream_rather_than_pass_unfiltered():
    policy = Policy(parse_config(POLICY).authorization)
    sse_filter = SseFilter(policy, policy.held("tools:read"), max_event_bytes=64)
    with pytest.raises(EndStream):
        await sse_filter(b"data: " + b"x" * 100)
