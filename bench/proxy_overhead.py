"""Proxy overhead: the same MCP calls DIRECT to the example upstream and THROUGH the gateway, side by side.

Run ``python bench/proxy_overhead.py [--duration 10] [--pin] [--json out.json]`` from the repository root.

Starts the example upstream (``python -m upstream_mcp --port 0``) and the gateway (``gateway.cli``
``serve``) as subprocesses on the embedded default (SQLite in a temp dir; ``migrate``, ``users create``,
``keys create`` first), the gateway with ``logging.level: WARNING`` and ``access_log: false``. Load is
stateless MCP 2026-07-28 ``tools/call`` POSTs of ``echo`` (each answer checked), closed loop at
concurrency 1, 16 and 64, direct and through the gateway in ABBA order after a warm-up; then the time
to the first streamed event of ``slow_count(steps=2, delay=0.2)`` with a progress token. Both servers
are stopped in a ``finally`` (SIGTERM, bounded wait, SIGKILL) and die with the bench (PR_SET_PDEATHSIG).

CPU placement. This was written on a 2-core machine where the load generator, the gateway and the
upstream each want a core. Default: no pinning; the kernel schedules freely, so through the gateway
three processes share 2 cores and the throughput ratio includes the gateway's CPU cost *on this box*
(taken from the upstream and the load generator). ``--pin``: bench and upstream share CPU 0 and the
gateway has CPU 1 to itself, so direct and gateway runs give the upstream and the load generator
exactly the same CPU, as a gateway on its own core or host would; the ratio then isolates the
gateway's latency and capacity. No pinning is the default because it assumes nothing about the
machine and is what a user gets; ``--pin`` answers "is the gateway fast enough on its own core". Either
way every process's CPU time is recorded per run and printed as CPU microseconds per call, which does
not depend on placement, and CPU used by *other* processes is reported, with a warning when a scenario
was noisy (on a 2-core box one busy neighbour distorts everything). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import dataclasses
import itertools
import json
import math
import os
import platform
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from gateway.config import GatewayConfig

PROTOCOL = "2026-07-28"
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": PROTOCOL,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "proxy-overhead-bench", "version": "0"},
}
ECHO_TEXT = "ping"
READY_PREFIX = "upstream_mcp listening on "
EMAIL = "bench@example.com"
READY_TIMEOUT, STOP_TIMEOUT, CALL_TIMEOUT = 30.0, 10.0, 30.0
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
UPSTREAM_ARGS = ("--host", "127.0.0.1", "--port", "0", "--log-level", "WARNING")
GATEWAY_MAIN = "import sys; from gateway.cli import main; sys.exit(main())"
PR_SET_PDEATHSIG = 1
NOISY = 0.10  # other processes using more than this share of a core during a segment make it noisy
RETRY_PAUSE = 5.0
SPEED_DRIFT = 0.2
QUOTA_WINDOWS, BIG = ("per_minute", "per_day", "per_month"), 10**12
_LIBC = ctypes.CDLL(None, use_errno=True)
_ids = itertools.count(1)


@dataclass
class Sample:
    """One mode in one scenario; the segments of a mode are merged with ``add``."""

    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    first_error: str | None = None

    def add(self, other: Sample) -> None:
        self.errors += other.errors
        self.seconds += other.seconds
        self.latencies += other.latencies
        self.cpu = {k: self.cpu.get(k, 0.0) + v for k, v in other.cpu.items()}
        self.first_error = self.first_error or other.first_error

    def failed(self, exc: Exception) -> None:
        self.errors += 1
        self.first_error = self.first_error or f"{type(exc).__name__}: {exc}"

    @property
    def calls(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def ms(self, p: float) -> float:
        return percentile(self.latencies, p) * 1000

    def cpu_us_per_call(self) -> dict[str, float]:
        return {k: round(v / self.calls * 1e6) for k, v in self.cpu.items()} if self.calls else {}

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "calls": self.calls,
            "errors": self.errors,
            "first_error": self.first_error,
            "seconds": self.seconds,
        }
        out |= {"throughput": self.throughput, "p50_ms": self.ms(0.5), "p99_ms": self.ms(0.99)}
        return out | {"cpu_us_per_call": self.cpu_us_per_call()}


@dataclass
class Row:
    scenario: str
    direct: Sample = field(default_factory=Sample)
    gateway: Sample = field(default_factory=Sample)
    paired_diffs: list[float] = field(default_factory=list)
    noise: float = 0.0  # the largest share of a core other processes used during a measured segment

    def side(self, mode: str) -> Sample:
        return self.direct if mode == "direct" else self.gateway

    @property
    def ratio(self) -> float:
        return self.gateway.throughput / self.direct.throughput if self.direct.throughput else 0.0

    @property
    def added_p50_ms(self) -> float:
        return self.gateway.ms(0.5) - self.direct.ms(0.5)

    @property
    def valid(self) -> bool:
        return not (self.direct.errors or self.gateway.errors) and bool(self.direct.calls and self.gateway.calls)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "scenario": self.scenario,
            "direct": self.direct.summary(),
            "gateway": self.gateway.summary(),
        }
        out |= {"ratio": self.ratio, "added_p50_ms": self.added_p50_ms, "other_processes_cores": self.noise}
        if self.paired_diffs:
            out["paired_diff_ms"] = {f"p{q * 100:g}": percentile(self.paired_diffs, q) * 1000 for q in P}
        return out


P = (0.5, 0.99)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))] if ordered else math.nan


# --- processes -------------------------------------------------------------------------------------


def child_setup(cpus: set[int] | None) -> Callable[[], None]:
    def setup() -> None:  # in the child, between fork and exec
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # dies with the bench, even a SIGKILLed one
        if cpus:
            os.sched_setaffinity(0, cpus)  # before exec: every thread the server starts inherits it

    return setup


async def stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, wait at most STOP_TIMEOUT, then SIGKILL."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
    try:
        async with asyncio.timeout(STOP_TIMEOUT):
            await process.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def spawn(
    stack: contextlib.AsyncExitStack, args: list[str], cpus: set[int] | None, log: Path
) -> asyncio.subprocess.Process:
    with log.open("wb") as err:  # the child has its own copy of the descriptor
        process = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=err, preexec_fn=child_setup(cpus)
        )
    stack.push_async_callback(stop, process)
    return process


async def gateway_cli(config: Path, *args: str, stdin: str = "") -> str:
    """Run one ``mcp-gateway`` command to completion; its stdout."""
    pipe = asyncio.subprocess.PIPE
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", GATEWAY_MAIN, *args, "--config", str(config), stdin=pipe, stdout=pipe, stderr=pipe
    )
    try:
        async with asyncio.timeout(60):
            out, err = await process.communicate(stdin.encode())
    finally:
        await stop(process)
    if process.returncode != 0:
        raise RuntimeError(f"mcp-gateway {' '.join(args)} failed: {err.decode().strip()}")
    return out.decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux ``/proc/PID/stat`` utime, stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """User + nice + system CPU seconds of the whole machine since boot (``/proc/stat``; irq time excluded,
    as per-process times never include it)."""
    user, nice, system = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:4]
    return (int(user) + int(nice) + int(system)) / os.sysconf("SC_CLK_TCK")


@dataclass
class Servers:
    upstream_url: str = ""
    gateway_url: str = ""
    api_key: str = ""
    pids: dict[str, int] = field(default_factory=dict)

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of the bench, each server, and every other process on the machine ("other")."""
        own = os.times()
        ours = {"bench": own.user + own.system} | {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        return ours | {"other": machine_busy_seconds() - sum(ours.values())}


async def start_servers(stack: contextlib.AsyncExitStack, tmp: Path, pin: bool) -> Servers:
    servers = Servers()
    log = tmp / "upstream.log"
    upstream = await spawn(stack, [sys.executable, "-m", "upstream_mcp", *UPSTREAM_ARGS], {0} if pin else None, log)
    assert upstream.stdout is not None
    async with asyncio.timeout(READY_TIMEOUT):
        while not (line := (await upstream.stdout.readline()).decode()).startswith(READY_PREFIX):
            if not line:
                raise RuntimeError(f"the upstream exited: {log.read_text()[-2000:]}")
    servers.upstream_url, servers.pids["upstream"] = line[len(READY_PREFIX) :].strip(), upstream.pid

    port, config = free_port(), tmp / "gateway.yaml"
    settings = {
        "public_url": f"http://127.0.0.1:{port}",
        "server": {"host": "127.0.0.1", "port": port},
        "upstream": {"url": f"{servers.upstream_url}/mcp", "sse_url": f"{servers.upstream_url}/sse"},
        "storage": {"url": f"sqlite:///{tmp / 'gateway.db'}"},
        "logging": {"level": "WARNING", "format": "text", "access_log": False},
    }
    if "quota" in {f.name for f in dataclasses.fields(GatewayConfig)}:  # the limiter runs but never refuses
        settings["quota"] = {"default_plan": "bench", "plans": {"bench": dict.fromkeys(QUOTA_WINDOWS, BIG)}}
    config.write_text(yaml.safe_dump(settings))
    await gateway_cli(config, "migrate")
    await gateway_cli(config, "users", "create", EMAIL, "--password-stdin", stdin="bench-password-123\n")
    servers.api_key = (await gateway_cli(config, "keys", "create", "--user", EMAIL)).split()[-1]
    log = tmp / "gateway.log"
    gateway_cmd = [sys.executable, "-c", GATEWAY_MAIN, "serve", "--config", str(config)]
    gateway = await spawn(stack, gateway_cmd, {1} if pin else None, log)
    servers.gateway_url, servers.pids["gateway"] = f"http://127.0.0.1:{port}", gateway.pid

    deadline = time.monotonic() + READY_TIMEOUT
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline and gateway.returncode is None:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{servers.gateway_url}/healthz") as response:
                    if response.status == 200:
                        return servers
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the gateway did not become healthy: {log.read_text()[-2000:]}")


# --- load ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    mode: str  # "direct" or "gateway"
    url: str
    api_key: str | None = None

    def headers(self, tool: str) -> dict[str, str]:
        auth = {"X-API-Key": self.api_key} if self.api_key else {}
        return {"MCP-Protocol-Version": PROTOCOL, "Mcp-Method": "tools/call", "Mcp-Name": tool} | HEADERS | auth


def tools_call(tool: str, arguments: dict[str, Any], meta: dict[str, Any] | None = None) -> tuple[int, bytes]:
    rid = next(_ids)
    params = {"name": tool, "arguments": arguments, "_meta": ENVELOPE | (meta or {})}
    return rid, json.dumps({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}).encode()


def check_result(message: Any, rid: int, expected: str) -> None:
    if not isinstance(message, dict) or message.get("id") != rid or not isinstance(message.get("result"), dict):
        raise ValueError(f"not a result: {str(message)[:200]}")
    if message["result"].get("isError") or message["result"].get("structuredContent", {}).get("result") != expected:
        raise ValueError(f"unexpected result: {str(message)[:200]}")


async def echo_call(session: aiohttp.ClientSession, target: Target) -> None:
    rid, body = tools_call("echo", {"text": ECHO_TEXT})
    async with session.post(target.url, data=body, headers=target.headers("echo")) as response:
        payload = await response.read()
        if response.status != 200 or response.content_type != "application/json":
            raise ValueError(f"HTTP {response.status} {response.content_type}: {payload[:200]!r}")
    check_result(json.loads(payload), rid, ECHO_TEXT)


async def run_load(
    session: aiohttp.ClientSession, target: Target, servers: Servers, concurrency: int, seconds: float, count: int
) -> Sample:
    """Closed loop: ``concurrency`` workers calling back to back for ``seconds`` (or ``count`` calls in all)."""
    sample, tickets, deadline = Sample(), itertools.count(), time.perf_counter() + seconds

    async def worker() -> None:
        while next(tickets) < count if count else time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                await echo_call(session, target)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                sample.failed(exc)
            else:
                sample.latencies.append(time.perf_counter() - started)

    cpu_before, started = servers.cpu(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    sample.seconds = time.perf_counter() - started
    sample.cpu = {name: max(0.0, value - cpu_before[name]) for name, value in servers.cpu().items()}  # ticks round
    return sample


async def measure_load(
    session: aiohttp.ClientSession, targets: list[Target], servers: Servers, concurrency: int, args: argparse.Namespace
) -> Row:
    row = Row(f"c={concurrency}")
    seconds, count = args.duration / args.rounds, args.count // args.rounds
    for rnd in range(args.rounds):
        for target in targets if rnd % 2 == 0 else targets[::-1]:  # ABBA: drift hits both modes alike
            for attempt in range(args.retry_noisy + 1):
                await run_load(session, target, servers, concurrency, args.warmup, 0)
                sample = await run_load(session, target, servers, concurrency, seconds, count)
                noise = sample.cpu["other"] / sample.seconds
                line = f"  {row.scenario:<6} {target.mode:<8} {sample.throughput:7.0f} calls/s, {sample.errors} errors"
                print(f"{line}, other processes {noise:.0%} of a core", flush=True)
                if noise <= NOISY or attempt == args.retry_noisy:
                    break
                await asyncio.sleep(RETRY_PAUSE)  # noisy: measure this segment again
            row.side(target.mode).add(sample)
            row.noise = max(row.noise, noise)
    return row


async def first_event(session: aiohttp.ClientSession, target: Target) -> float:
    """Seconds from sending ``slow_count`` to the first SSE ``data:`` line with a progress notification."""
    rid, body = tools_call("slow_count", {"steps": 2, "delay": 0.2}, {"progressToken": f"bench-{next(_ids)}"})
    started, first, final = time.perf_counter(), None, None
    async with session.post(target.url, data=body, headers=target.headers("slow_count")) as response:
        if response.status != 200 or response.content_type != "text/event-stream":
            raise ValueError(f"HTTP {response.status} {response.content_type}")
        async for line in response.content:
            if first is None and line.startswith(b"data:") and b"notifications/progress" in line:
                first = time.perf_counter() - started
            elif line.startswith(b"data:") and b'"result"' in line:
                final = json.loads(line[5:])
    if first is None:
        raise ValueError("no progress notification in the stream")
    check_result(final, rid, "counted to 2")
    return first


async def measure_first_event(
    session: aiohttp.ClientSession, targets: list[Target], servers: Servers, reps: int
) -> Row:
    row, cpu_before, started = Row("first-event"), servers.cpu(), time.perf_counter()
    for rep in range(reps):
        times: dict[str, float] = {}
        for target in targets if rep % 2 == 0 else targets[::-1]:
            try:
                times[target.mode] = await first_event(session, target)
                row.side(target.mode).latencies.append(times[target.mode])
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                row.side(target.mode).failed(exc)
        if len(times) == 2:
            row.paired_diffs.append(times["gateway"] - times["direct"])
    row.noise = (servers.cpu()["other"] - cpu_before["other"]) / (time.perf_counter() - started)
    return row


# --- report ----------------------------------------------------------------------------------------


def machine_info(args: argparse.Namespace) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    placement = "pinned: bench+upstream on CPU 0, gateway on CPU 1" if args.pin else "not pinned (kernel schedules)"
    info: dict[str, Any] = {"cores": os.cpu_count(), "cpu_model": model, "python": platform.python_version()}
    info |= {"platform": platform.platform(), "aiohttp": aiohttp.__version__, "options": vars(args)}
    setup = f"gateway logging WARNING, access_log false, SQLite, quota caps 1e12; MCP {PROTOCOL} POSTs; {placement}"
    return info | {"setup": setup}


def speed_ms() -> float:
    """Best of 5 runs of a fixed pure-Python workload, in ms: how fast this (possibly shared) host is right now."""
    best = math.inf
    for _ in range(5):
        started = time.perf_counter()
        sum(i * i for i in range(200_000))
        best = min(best, time.perf_counter() - started)
    return best * 1000


def verdicts(rows: dict[str, Row]) -> dict[str, str]:
    """Target -> PASS / MISS, or INVALID when the scenario had errors."""
    c64, c1, fe = rows["c=64"], rows["c=1"], rows["first-event"]
    checks = [
        (c64, f"gateway >= 90% of direct throughput at c=64 (got {c64.ratio:.1%})", c64.ratio >= 0.90),
        (c1, f"<= 1 ms added to p50 at c=1 (got {c1.added_p50_ms:.3f} ms)", c1.added_p50_ms <= 1.0),
        (fe, f"<= 1 ms added to the first streamed event (got {fe.added_p50_ms:.3f} ms)", fe.added_p50_ms <= 1.0),
    ]
    return {text: verdict(row, ok) for row, text, ok in checks}


def verdict(row: Row, ok: bool) -> str:
    if not row.valid:
        return "INVALID (errors)"
    return ("PASS" if ok else "MISS") + (" (noisy)" if row.noise > NOISY else "")


def print_report(rows: dict[str, Row], info: dict[str, Any]) -> None:
    print(f"\nmachine: {info['cores']} cores ({info['cpu_model']}), Python {info['python']}, {info['platform']}")
    start, end = info["speed_ms"]
    print(f"host speed: {start:.1f} ms before, {end:.1f} ms after (fixed Python workload, lower is faster)")
    if abs(end - start) > SPEED_DRIFT * min(start, end):
        print("WARNING: the host's speed changed during the run; compare with care")
    print(f"setup: {info['setup']}\n")
    head = f"{'scenario':<12}{'direct/s':>9}{'gateway/s':>10}{'ratio':>7}{'direct p50/p99 ms':>21}"
    head += f"{'gateway p50/p99 ms':>21}{'added p50 ms':>14}{'errors d/g':>12}"
    print(head + "\n" + "-" * len(head))
    for row in rows.values():
        d, g = row.direct, row.gateway
        tput = f"{d.throughput:>9.0f}{g.throughput:>10.0f}{row.ratio:>7.3f}"
        if row.scenario == "first-event":
            tput = f"{'-':>9}{'-':>10}{'-':>7}"
        lat = f"{d.ms(0.5):>12.2f} / {d.ms(0.99):<7.2f}{g.ms(0.5):>11.2f} / {g.ms(0.99):<7.2f}"
        print(f"{row.scenario:<12}{tput}{lat}{row.added_p50_ms:>13.3f}{d.errors:>9}/{g.errors}")
    fe = rows["first-event"]
    diffs = ", ".join(f"p{q * 100:g} {percentile(fe.paired_diffs, q) * 1000:.3f} ms" for q in P)
    print(f"\nfirst-event, paired gateway - direct: {diffs} (n={len(fe.paired_diffs)})")
    for row in (row for row in rows.values() if row.scenario != "first-event"):
        print(f"CPU us/call at {row.scenario}: direct {row.direct.cpu_us_per_call()}")
        print(f"{'':>{len(row.scenario) + 16}}gateway {row.gateway.cpu_us_per_call()}")
    for row in (row for row in rows.values() if row.noise > NOISY):
        print(f"WARNING: other processes used up to {row.noise:.0%} of a core during {row.scenario}: noisy")
    for row, mode in itertools.product(rows.values(), ("direct", "gateway")):
        if row.side(mode).first_error:
            print(f"first error, {row.scenario} {mode}: {row.side(mode).first_error}")
    print("\ntargets:")
    for text, verdict in verdicts(rows).items():
        print(f"  {verdict:<16} {text}")


async def bench(args: argparse.Namespace) -> int:
    main_task, loop = asyncio.current_task(), asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # unwind (stop the servers, remove the temp dir), then exit
        loop.add_signal_handler(sig, main_task.cancel if main_task else lambda: None)
    if args.pin:
        os.sched_setaffinity(0, {0})
    info = machine_info(args) | {"speed_ms": [speed_ms()]}
    rows: dict[str, Row] = {}
    async with contextlib.AsyncExitStack() as stack:  # unwinds: HTTP session, gateway, upstream, temp dir
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mcp-bench-")))
        servers = await start_servers(stack, tmp, args.pin)
        targets = [
            Target("direct", f"{servers.upstream_url}/mcp"),
            Target("gateway", f"{servers.gateway_url}/mcp", servers.api_key),
        ]
        connector = aiohttp.TCPConnector(limit=256, limit_per_host=256)
        timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT)
        session = await stack.enter_async_context(aiohttp.ClientSession(connector=connector, timeout=timeout))
        for concurrency in args.concurrency:
            rows[f"c={concurrency}"] = await measure_load(session, targets, servers, concurrency, args)
        print(f"  first-event: {args.first_event_reps} x slow_count(2, 0.2) per mode, alternating", flush=True)
        rows["first-event"] = await measure_first_event(session, targets, servers, args.first_event_reps)
    info["speed_ms"].append(speed_ms())
    print_report(rows, info)
    if args.json:
        results = {"machine": info, "rows": [row.summary() for row in rows.values()], "targets": verdicts(rows)}
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(row.valid for row in rows.values()) else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per mode and concurrency")
    parser.add_argument("--count", type=int, default=0, help="measure this many calls (per mode) instead")
    parser.add_argument("--rounds", type=int, default=2, help="segments per mode, in ABBA order (default 2)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds before every segment")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--first-event-reps", type=int, default=30, help="slow_count calls per mode")
    parser.add_argument("--retry-noisy", type=int, default=2, help="re-measure a noisy segment up to N times")
    parser.add_argument("--pin", action="store_true", help="bench+upstream on CPU 0, gateway alone on CPU 1")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if not {1, 64} <= set(args.concurrency):
        parser.error("--concurrency must include 1 and 64 (the targets use them)")
    if args.pin and not {0, 1} <= os.sched_getaffinity(0):
        parser.error("--pin needs CPUs 0 and 1")
    if args.rounds < 1 or args.duration <= 0:
        parser.error("--rounds must be at least 1 and --duration positive")
    return args


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(bench(parse_args())))
    except asyncio.CancelledError:
        sys.exit("interrupted; servers stopped")
