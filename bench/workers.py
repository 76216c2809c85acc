"""Workers: the gateway's CPU per request with 1 worker and with N, to show that workers do not serialize.

Run ``python bench/workers.py [--duration 6] [--rounds 3] [--workers 2] [--concurrency 64]`` from the repository
root (Linux, with Debian's ``nginx-light`` and ``wrk``), with Redis at ``BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``).

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
The three gateways run at once (an idle one costs nothing) and are measured in rounds, in alternating order, because
a shared VM's speed drifts by tens of percent within minutes; the report gives medians and each round's CPU per
request. Absolute numbers on a shared machine mean little: compare the lines with each other, in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
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


@dataclass
class Line:
    """One gateway configuration, measured in every round."""

    label: str
    url: str
    supervisor: int
    pids: list[int]
    runs: list[tuple[float, float, float, float, int, dict[int, float]]] = field(default_factory=list)


def measure(line: Line, key: str, args: argparse.Namespace) -> None:
    headers = {**HEADERS, "X-API-Key": key}
    before = {pid: cpu_seconds([pid]) for pid in line.pids}
    switches = context_switches(line.pids)
    result = wrk(line.url, args.concurrency, args.duration, headers, [line.supervisor], line.label)
    used = {pid: cpu_seconds([pid]) - before[pid] for pid in line.pids}
    switches = context_switches(line.pids) - switches
    requests = max(result.rps * args.duration, 1)
    line.runs.append((result.rps, result.p50_ms, result.cpu_us_per_request, switches / requests, result.errors, used))


def report(line: Line) -> str:
    rps, p50, cpu, switches = (statistics.median(run[i] for run in line.runs) for i in range(4))
    errors = sum(run[4] for run in line.runs)
    used = {pid: sum(run[5][pid] for run in line.runs) for pid in line.pids}
    total = sum(used.values()) or 1.0
    shares = " ".join(f"{used[pid] / total:.0%}" for pid in line.pids) if len(line.pids) > 1 else "-"
    each = ", ".join(f"{run[2]:.0f}" for run in line.runs)
    return f"{line.label:<22} {rps:>8.0f} {p50:>8.3f} {cpu:>11.0f} {switches:>10.2f} {errors:>6}  {shares:<12} {each}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs 2 CPUs: the load generator runs on CPU 1")
    lines: list[Line] = []
    with tempfile.TemporaryDirectory(prefix="workers-") as tmp, contextlib.ExitStack() as servers:
        directory = Path(tmp)
        (directory / "body").mkdir()
        nginx_port = free_port()
        upstream = f"http://127.0.0.1:{nginx_port}/mcp"
        nginx = "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "nginx"
        servers.enter_context(
            started([nginx, "-c", str(nginx_config(directory, nginx_port))], cpus="1", ready_url=upstream)
        )
        config, key = gateway_setup(directory, upstream, free_port(), args.workers)
        n = args.workers
        for label, workers, cpus in (
            ("1 worker, CPU 0", 1, "0"),
            (f"{n} workers, CPU 0", n, "0"),
            (f"{n} workers, CPUs 0-1", n, "0-1"),
        ):
            port = free_port()
            serve = [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port)]
            gw = servers.enter_context(
                started(
                    [*serve, "--workers", str(workers)],
                    cpus=cpus,
                    ready_url=f"http://127.0.0.1:{port}/healthz",
                    cwd=directory,
                )
            )
            line = Line(label, f"http://127.0.0.1:{port}/mcp", gw.pid, worker_pids(gw.pid))
            wrk(line.url, args.concurrency, 2, {**HEADERS, "X-API-Key": key}, [gw.pid], "warm")
            lines.append(line)
        for round_ in range(args.rounds):  # every configuration in every round, the order reversed every other one
            for line in lines if round_ % 2 == 0 else lines[::-1]:
                measure(line, key, args)
    print(
        f"C={args.concurrency}; {args.rounds} rounds of {args.duration:.0f} s per line (medians); "
        "nginx and wrk on CPU 1"
    )
    header = f"{'gateway':<22} {'req/s':>8} {'p50 ms':>8} {'CPU us/req':>11} {'cswch/req':>10} {'errors':>6}"
    print(f"{header}  {'CPU share':<12} CPU us/req per round")
    print("\n".join(report(line) for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
