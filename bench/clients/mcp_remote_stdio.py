"""Drive an MCP stdio client bridge (mcp-remote) over JSON-RPC: initialize, tools/list, tools/call echo.

    python bench/clients/mcp_remote_stdio.py [--timeout S] [--text T] -- <command that speaks MCP on stdio>...

e.g. ``-- npx mcp-remote http://127.0.0.1:8080/mcp``. The command inherits the environment (set ``BROWSER`` to
``bench/clients/browser_login.sh`` and ``GATEWAY_PASSWORD`` for an unattended OAuth sign-in). Every reply is
awaited with a deadline; the bridge's stderr is echoed with a ``[stderr]`` prefix. The process is terminated
(then killed) on the way out, whatever happens. Exit status 0 when the echo came back, 1 otherwise.
A manual trial script (see bench/clients/README.md), not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Any


def pump(stream: Any, sink: queue.Queue[str | None], echo: bool) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").rstrip("\n")
        if echo:
            print(f"[stderr] {line}", file=sys.stderr, flush=True)
        else:
            sink.put(line)
    sink.put(None)


class Bridge:
    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=pump, args=(self.process.stdout, self.lines, False), daemon=True).start()
        threading.Thread(target=pump, args=(self.process.stderr, queue.Queue(), True), daemon=True).start()
        self.next_id = 1

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message)
        print(f">>> {data}", flush=True)
        assert self.process.stdin is not None
        self.process.stdin.write(data.encode() + b"\n")
        self.process.stdin.flush()

    def request(self, method: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
        request_id = self.next_id
        self.next_id += 1
        self.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer to {method} within {timeout:.0f} s")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise EOFError(f"the bridge exited (status {self.process.poll()}) before answering {method}")
            print(f"<<< {line[:2000]}", flush=True)
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(message, dict) and message.get("id") == request_id and ({"result", "error"} & message.keys()):
                return message

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                if self.process.stdin is not None:
                    self.process.stdin.close()
                self.process.wait(timeout=3)
            except (subprocess.TimeoutExpired, OSError):
                pass
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # the bridge and anything it spawned (its browser)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        print(f"bridge exit status {self.process.returncode}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for each answer (default 90)")
    parser.add_argument("--text", default="hello through mcp-remote", help="what to echo")
    parser.add_argument("--protocol-version", default="2025-06-18", help="protocolVersion sent in initialize")
    parser.add_argument("--calls", type=int, default=1, help="how many echo calls (default 1)")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between calls (e.g. past the token TTL)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the bridge command")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the bridge command after --")
    bridge = Bridge(command)
    try:
        init = bridge.request(
            "initialize",
            {
                "protocolVersion": args.protocol_version,
                "capabilities": {},
                "clientInfo": {"name": "bench-clients-stdio-driver", "version": "0.1"},
            },
            args.timeout,
        )
        if "error" in init:
            print(f"initialize failed: {init['error']}", flush=True)
            return 1
        bridge.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        tools = bridge.request("tools/list", {}, args.timeout)
        names = [tool["name"] for tool in tools.get("result", {}).get("tools", [])]
        print(f"tools: {names}", flush=True)
        ok = True
        for number in range(args.calls):
            if number:
                print(f"(pausing {args.pause:g} s)", flush=True)
                time.sleep(args.pause)
            call = bridge.request("tools/call", {"name": "echo", "arguments": {"text": args.text}}, args.timeout)
            content = call.get("result", {}).get("content", [])
            echoed = content[0].get("text") if content else None
            print(f"echo returned: {echoed!r}", flush=True)
            ok = ok and echoed == args.text
        return 0 if ok else 1
    except (TimeoutError, EOFError) as exc:
        print(f"FAILED: {exc}", flush=True)
        return 1
    finally:
        bridge.close()


if __name__ == "__main__":
    sys.exit(main())
