"""The cost of filtering a ``tools/list`` answer of 500 tools for a principal with a narrow scope.

Run ``python bench/policy_filter.py [--tools 500] [--rules 20] [--rounds 200]`` from the repository root.

Measures, in-process and on one core, what the gateway adds to such an answer: parsing the JSON body, judging every
tool against the ordered rules (shell-style patterns compiled once), dropping what the scope does not cover and
serialising the result; for a JSON answer (``filter_body``) and for the same answer as one SSE event split into
4 KiB chunks (``SseFilter``). A principal holding ``mcp:tools`` is not filtered at all (not measured: zero).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from collections.abc import Callable

from gateway.policy.config import parse_authorization_config
from gateway.policy.filter import SseFilter, filter_body
from gateway.policy.match import Policy


def policy_with(rules: int) -> Policy:
    raw = {
        "scopes": {f"team{i}:use": {"description": f"Use team {i}'s tools"} for i in range(rules)},
        "rules": [{"name": f"team{i}", "tools": [f"team{i}_*"], "scopes": [f"team{i}:use"]} for i in range(rules)],
        "default_scopes": ["mcp:tools"],
    }
    config, problems = parse_authorization_config(raw)
    assert not problems, problems
    return Policy(config)


def answer(tools: int, rules: int) -> bytes:
    schema = {"type": "object", "properties": {"text": {"type": "string", "description": "What to work on"}}}
    listed = [
        {
            "name": f"team{i % rules}_tool{i}",
            "description": f"Tool number {i}, which does something",
            "inputSchema": schema,
        }
        for i in range(tools)
    ]
    return json.dumps({"jsonrpc": "2.0", "id": 7, "result": {"tools": listed}}).encode()


def timed(rounds: int, run: Callable[[], object]) -> list[float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tools", type=int, default=500)
    parser.add_argument("--rules", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    policy = policy_with(args.rules)
    held = policy.held("team0:use team1:use")  # a narrow scope: two teams' tools of twenty
    body = answer(args.tools, args.rules)
    kept = len(json.loads(filter_body(policy, held, body))["result"]["tools"])

    event = b"event: message\ndata: " + body + b"\n\n"
    chunks = [event[start : start + 4096] for start in range(0, len(event), 4096)]

    def sse() -> None:
        sse_filter = SseFilter(policy, held)
        for chunk in chunks:
            coroutine = sse_filter(chunk)
            with contextlib.suppress(StopIteration):
                coroutine.send(None)  # it never awaits: run it without an event loop's own cost

    def parse_only() -> None:
        json.dumps(json.loads(body))

    print(f"tools/list of {args.tools} tools ({len(body) / 1024:.0f} KiB), {args.rules} rules, {kept} tools kept")
    runs: list[tuple[str, Callable[[], object]]] = [
        ("json parse+dump only", parse_only),
        ("filter JSON answer", lambda: filter_body(policy, held, body)),
        ("filter SSE answer", sse),
    ]
    for name, run in runs:
        samples = sorted(timed(args.rounds, run))
        median, p95 = statistics.median(samples) * 1000, samples[int(len(samples) * 0.95)] * 1000
        print(f"  {name:<22} median {median:7.3f} ms   p95 {p95:7.3f} ms")


if __name__ == "__main__":
    main()
