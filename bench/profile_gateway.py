"""The gateway's CPU per request under wrk (nginx as the upstream), optionally profiled with py-spy.

Run ``python bench/profile_gateway.py [--duration 10] [--lease on|off] [--concurrency 64] [--py-spy out.txt]``
from the repository root (Linux, with ``nginx`` and ``wrk``; ``pip install py-spy`` for ``--py-spy``).

The same set-up as ``ceiling.py``'s gateway (an API key, the Redis quota on a finite plan, metrics on), one
gateway on CPU 0 with nginx, wrk on CPU 1. ``--lease`` sets ``quota.lease`` (on: slices leased per replica; off:
one Redis script per request). Prints req/s, p50 and the gateway's CPU µs per request (``/proc``, every thread),
and with ``--py-spy PATH`` writes a collapsed-stack profile of the gateway during the measured run (``py-spy
record --format raw``; the top frames by own samples are printed too).
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ceiling import free_port, gateway_setup, nginx_config, started, wrk

HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2026-07-28",
    "Mcp-Method": "tools/call",
    "Mcp-Name": "echo",
}


def top_frames(raw: Path, limit: int = 25) -> list[tuple[str, float]]:
    """Frames by own (leaf) samples, as shares of all samples, from py-spy's collapsed output."""
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        own[stack.split(";")[-1]] += int(count)
        total += int(count)
    return [(frame, n / max(total, 1)) for frame, n in own.most_common(limit)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--lease", choices=("on", "off"), default="on")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--py-spy", type=Path, dest="py_spy")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="profile-") as tmp:
        directory = Path(tmp)
        (directory / "body").mkdir()
        nginx_port = free_port()
        upstream = f"http://127.0.0.1:{nginx_port}/mcp"
        with started(["nginx", "-c", str(nginx_config(directory, nginx_port))], cpus="0", ready_url=upstream):
            port = free_port()
            config, key = gateway_setup(directory, upstream, port, 1)
            settings = yaml.safe_load(config.read_text())
            settings["quota"]["lease"] = args.lease == "on"
            config.write_text(yaml.safe_dump(settings))
            serve = [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port)]
            url = f"http://127.0.0.1:{port}/mcp"
            with started(serve, cpus="0", ready_url=f"http://127.0.0.1:{port}/healthz") as gw:
                wrk(url, args.concurrency, 2, {**HEADERS, "X-API-Key": key}, [gw.pid], "warm-up")
                spy = None
                if args.py_spy:
                    spy = subprocess.Popen(
                        [
                            "py-spy",
                            "record",
                            "--pid",
                            str(gw.pid),
                            "--format",
                            "raw",
                            "--rate",
                            "250",
                            "--duration",
                            str(int(args.duration)),
                            "--output",
                            str(args.py_spy),
                            "--nonblocking",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                result = wrk(url, args.concurrency, args.duration, {**HEADERS, "X-API-Key": key}, [gw.pid], "gateway")
                if spy is not None:
                    spy.wait(timeout=args.duration + 30)
    print(f"lease={args.lease} C={result.concurrency} req/s={result.rps:.0f} p50={result.p50_ms:.3f} ms")
    print(f"gateway CPU µs/request={result.cpu_us_per_request:.0f} errors={result.errors}")
    if args.py_spy and args.py_spy.exists():
        for frame, share in top_frames(args.py_spy):
            print(f"{share * 100:5.1f}%  {frame}")
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
