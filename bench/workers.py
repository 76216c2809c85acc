"""Workers: the gateway's CPU per request with 1 worker and with N, to show that workers do not serialize.

Run ``python bench/workers.py [--duration 10] [--workers 2] [--concurrency 64]`` from the repository root (Linux,
with Debian's ``nginx-light`` and ``wrk``), with Redis at ``BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``).

The setup is ``bench/ceiling.py``'s (nginx answering static JSON as the upstream; ``tools/call`` POSTs with an API
key; the Redis quota on, metrics on; the embedded SQLite storage). nginx and wrk share CPU 1; the gateway runs:

1. ``1 worker on CPU 0``: the reference;
2. ``N workers on CPU 0``: the same core shared by N workers. If nothing serializes them (a lock, one connection),
   CPU per request stays what it was and throughput too (one core is still one core);
3. ``N workers on CPUs 0-1``: every core of a 2-core machine (they then share CPU 1 with nginx and wrk, so this
   line shows what the machine gives, not what a bigger one would).

For each: requests per second, p50, the CPU microseconds per request of the gateway's processes (supervisor and
workers, from ``/proc``), their context switches per request, and each worker's share of that CPU (how evenly the
shared socket spreads the load).
Absolute numbers on a shared machine mean little: compare the lines with each other, in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ceiling import (  # type: ignore[import-not-found]  # bench/ is not a package
    cpu_seconds,
    free_port,
    gateway_setup,
    nginx_config,
    started,
    wrk,
)

HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2026-07-28",
    "Mcp-Method": "tools/call",
    "Mcp-Name": "echo",
}


def worker_pids(supervisor: int) -> list[int]:
    """The gateway's serving processes: the workers, or the process itself when it has none."""
    with contextlib.suppress(OSError):
        children = [int(pid) for pid in Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()]
        if children:
            return children
    return [supervisor]


def context_switches(pids: list[int]) -> int:
    """Voluntary and involuntary context switches of these processes so far (``/proc/PID/status``)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if "ctxt_switches:" in line:
                    total += int(line.split()[1])
    return total


def run(label: str, config: Path, key: str, *, workers: int, cpus: str, args: argparse.Namespace) -> str:
    port = free_port()
    serve = [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port)]
    serve += ["--workers", str(workers)]
    with started(serve, cpus=cpus, ready_url=f"http://127.0.0.1:{port}/healthz") as gw:
        pids = worker_pids(gw.pid)  # taskset execs the gateway: gw.pid is the supervisor (or the one process)
        url, headers = f"http://127.0.0.1:{port}/mcp", {**HEADERS, "X-API-Key": key}
        wrk(url, args.concurrency, 2, headers, [gw.pid], "warm")
        before = {pid: cpu_seconds([pid]) for pid in pids}
        switches = context_switches(pids)
        result = wrk(
            f"http://127.0.0.1:{port}/mcp",
            args.concurrency,
            args.duration,
            {**HEADERS, "X-API-Key": key},
            [gw.pid],
            label,
        )
        used = {pid: cpu_seconds([pid]) - before[pid] for pid in pids}
        switches = context_switches(pids) - switches
    requests = result.rps * args.duration
    total = sum(used.values()) or 1.0
    shares = " ".join(f"{used[pid] / total:.0%}" for pid in pids) if len(pids) > 1 else "-"
    return (
        f"{label:<22} {result.rps:>8.0f} {result.p50_ms:>8.3f} {result.cpu_us_per_request:>11.0f} "
        f"{switches / max(requests, 1):>10.2f} {result.errors:>6}  {shares}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs 2 CPUs: the load generator runs on CPU 1")
    lines = []
    with tempfile.TemporaryDirectory(prefix="workers-") as tmp:
        directory = Path(tmp)
        (directory / "body").mkdir()
        nginx_port = free_port()
        upstream = f"http://127.0.0.1:{nginx_port}/mcp"
        nginx = "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "nginx"
        with started([nginx, "-c", str(nginx_config(directory, nginx_port))], cpus="1", ready_url=upstream):
            config, key = gateway_setup(directory, upstream, free_port(), args.workers)
            n = args.workers
            lines.append(run("1 worker, CPU 0", config, key, workers=1, cpus="0", args=args))
            lines.append(run(f"{n} workers, CPU 0", config, key, workers=n, cpus="0", args=args))
            lines.append(run(f"{n} workers, CPUs 0-1", config, key, workers=n, cpus="0-1", args=args))
    print(f"C={args.concurrency}, {args.duration:.0f} s each; nginx and wrk on CPU 1")
    header = f"{'gateway':<22} {'req/s':>8} {'p50 ms':>8} {'CPU us/req':>11} {'cswch/req':>10} {'errors':>6}"
    print(f"{header}  CPU share per worker")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
