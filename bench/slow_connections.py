"""Slow connections against a gateway under a low open-file limit: does ``/healthz`` answer, how much does the
log grow, how much memory do the connections cost.

Run ``python bench/slow_connections.py [--connections 1100] [--nofile 1024] [--hold 20] [--sources 1]`` from the
repository root (``--root PATH`` runs the gateway of another checkout, e.g. ``/work/main``, for a before/after).

The gateway (``python -m gateway serve``, SQLite, default ``server.*`` settings, text log) runs with
``RLIMIT_NOFILE`` set to ``--nofile``. ``--connections`` attackers each open a connection from one of ``--sources``
loopback addresses (127.0.0.2, ...), send a request head one byte per ``--interval`` seconds and reconnect as soon
as the gateway closes them. For ``--hold`` seconds a probe asks ``/healthz`` from 127.0.0.1 once a second
(5 s deadline). Reported: probes answered, the gateway's peak RSS, and the log's lines and bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAD = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Padding: " + b"a" * 4000 + b"\r\n\r\n"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def attacker(port: int, source: str, interval: float, stop: asyncio.Event, opened: list[int]) -> None:
    while not stop.is_set():
        try:
            async with asyncio.timeout(5):
                reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        except (OSError, TimeoutError):
            continue
        opened[0] += 1
        try:
            for byte in HEAD:
                writer.write(bytes([byte]))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        if not await reader.read(1024):
                            break  # closed by the gateway: reconnect
                if stop.is_set():
                    break
        except OSError:
            pass
        finally:
            writer.close()


async def probe(port: int) -> bool:
    try:
        async with asyncio.timeout(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.1", 0))
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
            answer = await reader.read()
            writer.close()
            return answer.startswith(b"HTTP/1.1 200 ")
    except (OSError, TimeoutError):
        return False


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp, "gateway.yaml")
        config.write_text(
            "server: {host: 127.0.0.1, port: 0}\nupstream: {url: 'http://127.0.0.1:9/mcp'}\n"
            f"storage: {{url: 'sqlite:///{tmp}/gateway.db'}}\nlogging: {{format: text}}\n"
        )
        log_path = Path(tmp, "gateway.log")

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, args.nofile))

        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway", "serve", "--migrate", "--config", str(config),
                cwd=args.root, env={"PYTHONPATH": str(args.root), "PATH": "/usr/bin:/bin"},
                stdout=asyncio.subprocess.DEVNULL, stderr=log, preexec_fn=limit,
            )  # fmt: skip
            try:
                while "listening on http://" not in log_path.read_text(errors="replace"):
                    await asyncio.sleep(0.1)
                text = log_path.read_text(errors="replace")
                port = int(text.split("listening on http://", 1)[1].split()[0].rsplit(":", 1)[1])
                idle_rss = rss_kib(process.pid)
                stop = asyncio.Event()
                opened = [0]
                sources = [f"127.0.0.{2 + i % args.sources}" for i in range(args.connections)]
                tasks = [asyncio.create_task(attacker(port, s, args.interval, stop, opened)) for s in sources]
                start_bytes = log_path.stat().st_size
                answered, peak_rss, started = 0, idle_rss, time.monotonic()
                for _ in range(args.hold):
                    answered += await probe(port)
                    peak_rss = max(peak_rss, rss_kib(process.pid))
                    await asyncio.sleep(max(0.0, started + _ + 1 - time.monotonic()))
                stop.set()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                logged = log_path.read_bytes()[start_bytes:]
            finally:
                process.terminate()
                await process.wait()
    print(f"gateway: {args.root}  open files: {args.nofile}  slow connections: {args.connections}")
    print(f"  /healthz answered:     {answered}/{args.hold} probes")
    print(f"  connections opened:    {opened[0]} (attackers reconnect when closed)")
    print(f"  RSS idle / peak:       {idle_rss / 1024:.0f} MiB / {peak_rss / 1024:.0f} MiB")
    lines = logged.count(b"\n")
    print(f"  log during the hold:   {lines} lines, {len(logged) / 1e6:.2f} MB; the first ones:")
    for line in logged.decode(errors="replace").splitlines()[:4]:
        print(f"    {line[:150]}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--connections", type=int, default=1100)
    parser.add_argument("--nofile", type=int, default=1024)
    parser.add_argument("--hold", type=int, default=20, help="seconds of measurement")
    parser.add_argument("--sources", type=int, default=1)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between header bytes")
    asyncio.run(main(parser.parse_args()))
