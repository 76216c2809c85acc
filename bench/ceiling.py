"""Ceiling: the gateway against a naive aiohttp pass-through proxy and nginx answering static JSON, one core each.

Run ``python bench/ceiling.py [--duration 5] [--rounds 3] [--workers 1] [--json out.json]`` from the repository root
(Linux, with Debian's ``nginx-light`` and ``wrk``).

The upstream is nginx answering every POST with a fixed JSON-RPC result, so only the proxy's own cost shows. Three
servers are measured in turn, each pinned to CPU 0 (``taskset``) with nginx, while ``wrk`` runs pinned to CPU 1:

* ``nginx``: wrk straight at nginx (the floor);
* ``naive``: an aiohttp pass-through proxy on uvloop with no authentication (``bench/naive_proxy.py``);
* ``gateway``: ``mcp-gateway serve`` with an API key, the Redis quota on (a finite plan, so every request is
  admitted against Redis) and metrics on; ``--workers N`` runs N workers (then pin to more cores with ``--cpus``).

All three run at once (an idle one costs nothing) and are measured in ``--rounds`` rounds, the naive proxy and the
gateway alternating (ABBA), because the speed of a shared VM drifts by tens of percent within minutes: the report
gives each figure's median and nginx's rate per round (the drift). Each is driven with stateless MCP ``tools/call``
POSTs at C=1 (latency) and C=64 (throughput); the report gives
requests per second, p50 latency, the server side's CPU microseconds per request (from ``/proc``), the gateway's
share of the naive proxy, and PASS/MISS for issue 15's targets: >= 5,000 req/s per gateway core, >= 0.75 of the
naive proxy, and at most 0.35 ms added to p50 at C=1 over the naive proxy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

import yaml

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
BODY = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {"name": "echo", "arguments": {"text": "ping"}},
}
ANSWER = '{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ping"}],"isError":false}}'
TARGET_RPS_PER_CORE, TARGET_SHARE, TARGET_ADDED_P50_MS = 5000.0, 0.75, 0.35


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes and their children so far (``/proc/PID/stat``)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        for task in _family(pid):
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{task}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _family(pid: int) -> list[int]:
    found = [pid]
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            found.extend(_family(int(child)))
    return found


@contextlib.contextmanager
def started(
    argv: list[str],
    *,
    cpus: str,
    ready_url: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` on ``cpus``; ``cwd``: where it runs (``python -m`` puts it first on the import path). Its
    stderr goes to a file (a pipe nobody reads would stall a chatty server), shown if it exits early."""
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below, after the process
    process = subprocess.Popen(
        ["taskset", "-c", cpus, *argv],
        env={**os.environ, **(env or {})},
        cwd=cwd,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        if ready_url is not None:
            _wait_ready(ready_url, process, log)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: IO[bytes]) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise SystemExit(f"{url}: the server exited: {log.read().decode(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within 30 s")


def nginx_config(directory: Path, port: int) -> Path:
    conf = directory / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {directory}/body;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location / {{
      default_type application/json;
      return 200 '{ANSWER}';
    }}
  }}
}}
""")
    return conf


@dataclass
class Result:
    server: str
    concurrency: int
    rps: float
    p50_ms: float
    cpu_us_per_request: float
    errors: int


def wrk(
    url: str, concurrency: int, duration: float, headers: dict[str, str], server_pids: list[int], name: str
) -> Result:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(json.dumps(BODY))}"]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    script.write_text("\n".join(lines) + "\n")
    load = ["-s", str(script), url]
    before = cpu_seconds(server_pids)
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{concurrency}", f"-d{int(duration)}s", "--latency", *load],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    used = cpu_seconds(server_pids) - before
    script.unlink()
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    p50_ms = float(p50.group(1)) * scale[p50.group(2)] if p50 else float("nan")
    errors = sum(int(n) for n in re.findall(r"(?:Non-2xx or 3xx responses|Socket errors:.*?timeout) (\d+)", out))
    errors += int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    return Result(name, concurrency, rps, p50_ms, used / max(requests, 1) * 1e6, errors)


def gateway_setup(directory: Path, upstream: str, port: int, workers: int) -> tuple[Path, str]:
    config = {
        "public_url": f"http://127.0.0.1:{port}",
        "upstream": {"url": upstream, "sse_url": None},
        "storage": {"url": f"sqlite:///{directory / 'gateway.db'}"},
        "redis": {"url": REDIS_URL, "revocation_channel": f"bench{port}:rev"},
        "quota": {
            "key_prefix": f"bench{port}:q",
            "default_plan": "bench",
            "plans": {"bench": {"per_minute": 10**9, "per_day": 10**10, "per_month": None}},
        },
        "limits": {"protective": {"mcp_auth_failures_per_address": 10**6}},
        "logging": {"level": "WARNING", "access_log": False},
        "metrics": {"enabled": True},
    }
    path = directory / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = [sys.executable, "-m", "gateway"]
    subprocess.run([*cli, "migrate", "--config", str(path)], check=True, capture_output=True)
    subprocess.run(
        [*cli, "users", "create", "bench@example.com", "--password-stdin", "--config", str(path)],
        input=b"bench-password-long-enough\n",
        check=True,
        capture_output=True,
    )
    key = subprocess.run(
        [*cli, "keys", "create", "--user", "bench@example.com", "--name", "bench", "--config", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[-1]
    return path, key


HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2026-07-28",
    "Mcp-Method": "tools/call",
    "Mcp-Name": "echo",
}


def median_result(runs: list[Result]) -> Result:
    """One line for several runs of a server at one concurrency: the median of each figure, errors summed."""
    return Result(
        runs[0].server,
        runs[0].concurrency,
        statistics.median(r.rps for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.cpu_us_per_request for r in runs),
        sum(r.errors for r in runs),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, naive and gateway alternating (ABBA)")
    parser.add_argument("--workers", type=int, default=1, help="gateway workers (serve --workers)")
    parser.add_argument("--cpus", default="0", help="CPUs of the server side (taskset list), default 0")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--verbose", action="store_true", help="print every measurement as it is taken")
    args = parser.parse_args()
    for tool in ("nginx", "wrk", "taskset"):
        if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists()):
            raise SystemExit(f"{tool} is missing (apt-get install nginx-light wrk util-linux)")
    runs: dict[tuple[str, int], list[Result]] = {}
    with tempfile.TemporaryDirectory(prefix="ceiling-") as tmp, contextlib.ExitStack() as servers:
        directory = Path(tmp)
        (directory / "body").mkdir()
        nginx_port = free_port()
        upstream = f"http://127.0.0.1:{nginx_port}/mcp"
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        ng = servers.enter_context(
            started([nginx, "-c", str(nginx_config(directory, nginx_port))], cpus=args.cpus, ready_url=upstream)
        )
        naive_port = free_port()
        naive = [sys.executable, str(ROOT / "bench" / "naive_proxy.py"), "--port", str(naive_port)]
        proxy = servers.enter_context(
            started([*naive, "--upstream", upstream], cpus=args.cpus, ready_url=f"http://127.0.0.1:{naive_port}/mcp")
        )
        gateway_port = free_port()
        config, key = gateway_setup(directory, upstream, gateway_port, args.workers)
        serve = [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(gateway_port)]
        if args.workers != 1:
            serve += ["--workers", str(args.workers)]
        gw = servers.enter_context(
            started(serve, cpus=args.cpus, ready_url=f"http://127.0.0.1:{gateway_port}/healthz", cwd=directory)
        )
        targets = {
            "nginx": (upstream, HEADERS, ng.pid),
            "naive": (f"http://127.0.0.1:{naive_port}/mcp", HEADERS, proxy.pid),
            "gateway": (f"http://127.0.0.1:{gateway_port}/mcp", {**HEADERS, "X-API-Key": key}, gw.pid),
        }
        for name in ("naive", "gateway"):  # warm-up: connections, caches, the first quota lease
            url, headers, pid = targets[name]
            wrk(url, 64, 1, headers, [pid], name)
        for round_ in range(args.rounds):
            order = ("naive", "gateway") if round_ % 2 == 0 else ("gateway", "naive")
            for c in (1, 64):
                for name in ("nginx", *order):
                    url, headers, pid = targets[name]
                    result = wrk(url, c, args.duration, headers, [pid], name)
                    runs.setdefault((name, c), []).append(result)
                    if args.verbose:
                        print(
                            f"  round {round_ + 1} {name:<8} C={c:<3} {result.rps:9.0f} req/s "
                            f"{result.cpu_us_per_request:6.0f} us/req",
                            flush=True,
                        )
    results = [median_result(runs[(name, c)]) for name in ("nginx", "naive", "gateway") for c in (1, 64)]
    by = {(r.server, r.concurrency): r for r in results}
    print(f"{args.rounds} rounds of {args.duration:.0f} s per server and concurrency (medians; naive and gateway ABBA)")
    print(f"{'server':<8} {'C':>3} {'req/s':>9} {'p50 ms':>8} {'CPU us/req':>11} {'errors':>6}")
    for r in results:
        print(
            f"{r.server:<8} {r.concurrency:>3} {r.rps:>9.0f} {r.p50_ms:>8.3f} "
            f"{r.cpu_us_per_request:>11.0f} {r.errors:>6}"
        )
    nginx_rates = ", ".join(f"{r.rps:.0f}" for r in runs[("nginx", 64)])
    print(f"host drift: nginx at C=64 per round {nginx_rates} req/s")
    cores = (
        len(args.cpus.split(","))
        if "-" not in args.cpus
        else int(args.cpus.split("-")[1]) - int(args.cpus.split("-")[0]) + 1
    )
    gateway64, naive64 = by[("gateway", 64)], by[("naive", 64)]
    per_core = gateway64.rps / cores
    share = gateway64.rps / naive64.rps if naive64.rps else 0.0
    cpu_ratio = gateway64.cpu_us_per_request / naive64.cpu_us_per_request if naive64.cpu_us_per_request else 0.0
    print(f"CPU per request at C=64, gateway / naive proxy: {cpu_ratio:.2f}")
    added = by[("gateway", 1)].p50_ms - by[("naive", 1)].p50_ms
    verdicts = [
        (
            f"gateway req/s per core at C=64: {per_core:.0f} (target >= {TARGET_RPS_PER_CORE:.0f})",
            per_core >= TARGET_RPS_PER_CORE,
        ),
        (f"gateway / naive proxy at C=64: {share:.2f} (target >= {TARGET_SHARE})", share >= TARGET_SHARE),
        (
            f"added p50 at C=1 over the naive proxy: {added:.3f} ms (target <= {TARGET_ADDED_P50_MS})",
            added <= TARGET_ADDED_P50_MS,
        ),
    ]
    invalid = any(r.errors for r in results)
    for text, ok in verdicts:
        print(("INVALID " if invalid else "PASS " if ok else "MISS ") + text)
    if args.json:
        args.json.write_text(json.dumps({"results": [asdict(r) for r in results], "verdicts": verdicts}, indent=2))
    return 1 if invalid else 0


if __name__ == "__main__":
    sys.exit(main())
