"""A real Redis Cluster for the tests: three ``redis-server`` primaries in cluster mode on loopback ports.

One per test session (``redis_cluster`` fixture in ``tests/conftest.py``), joined with ``redis-cli --cluster
create`` and ready once every node's ``CLUSTER INFO`` says ``cluster_state:ok``. Nodes run with
``cluster-require-full-coverage no`` (what the README recommends): a dead primary makes only its own slots
unavailable, so only the accounts whose keys hash there degrade. ``kill``/``restart`` take one primary down and
bring it back with its slots (its ``nodes-PORT.conf`` survives); a test that kills one restarts it after.
Under CI=true a missing binary fails the test, like an unreachable Redis does.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import RedisError

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
READY_TIMEOUT = 30.0
POLL_INTERVAL = 0.05
BUS_OFFSET = 10_000
"""A cluster node also listens on its port + 10000 (the cluster bus)."""


@dataclass
class RedisClusterNodes:
    directory: Path
    ports: list[int]
    _processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """``redis.url`` of the cluster: any one node (the client discovers the others)."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self, port: int) -> None:
        self._processes[port] = subprocess.Popen(
            [
                REDIS_SERVER,
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(self.directory / f"nodes-{port}.conf"),
                "--cluster-node-timeout", "2000",
                "--cluster-require-full-coverage", "no",
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
                "--logfile", str(self.directory / f"redis-{port}.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def kill(self, port: int) -> None:
        """SIGKILL one primary (its slots become unavailable; the others keep serving theirs)."""
        process = self._processes.pop(port)
        process.kill()
        process.wait(timeout=10)

    def restart(self, port: int) -> None:
        """Start a killed primary again and wait until the whole cluster is ``ok``."""
        self.start(port)
        self.wait_ok()

    def node_of(self, key: str) -> int:
        """The port of the primary that holds ``key``'s slot."""
        with Redis(host="127.0.0.1", port=self.ports[0], socket_timeout=5) as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if int(start) <= slot <= int(end):
                    return int(primary[1])
        raise AssertionError(f"no node holds slot {slot}")

    def wait_ok(self) -> None:
        """Poll (bounded) until every node answers ``cluster_state:ok``."""
        deadline = time.monotonic() + READY_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            states = [self._state(port) for port in self.ports]
            if all(state == "ok" for state in states):
                return
            last = ", ".join(f"{port}: {state}" for port, state in zip(self.ports, states, strict=True))
            time.sleep(POLL_INTERVAL)
        pytest.fail(f"Redis Cluster not ok after {READY_TIMEOUT} s ({last})", pytrace=False)

    def stop_all(self) -> None:
        for port in list(self._processes):
            process = self._processes.pop(port)
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    @staticmethod
    def _state(port: int) -> str:
        try:
            with Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1) as client:
                info = client.execute_command("CLUSTER", "INFO")
        except (RedisError, OSError) as exc:
            return type(exc).__name__
        text = info.decode() if isinstance(info, bytes) else str(info)
        for line in text.splitlines():
            if line.startswith("cluster_state:"):
                return line.split(":", 1)[1].strip()
        return "unknown"


def _cluster_ports(count: int) -> list[int]:
    """Free loopback ports whose cluster bus port (+10000) is free too (and below 65536)."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(20_000, 50_000)
        if port not in ports and _free(port) and _free(port + BUS_OFFSET):
            ports.append(port)
    return ports


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _until_answering(port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(RedisError, OSError), Redis(host="127.0.0.1", port=port, socket_timeout=1) as c:
            if c.ping():
                return
        time.sleep(POLL_INTERVAL)
    pytest.fail(f"redis-server on port {port} did not answer", pytrace=False)


@contextlib.contextmanager
def running_redis_cluster(primaries: int = 3) -> Iterator[RedisClusterNodes]:
    """Synchronous, so a fixture of any scope can ask for it."""
    for binary in (REDIS_SERVER, REDIS_CLI):
        if not Path(binary).exists():
            pytest.fail(f"{binary} is not installed (apt-get install redis-server)", pytrace=False)
    directory = Path(tempfile.mkdtemp(prefix="redis-cluster-"))
    nodes = RedisClusterNodes(directory, _cluster_ports(primaries))
    try:
        for port in nodes.ports:
            nodes.start(port)
        for port in nodes.ports:
            _until_answering(port)
        created = subprocess.run(
            [
                REDIS_CLI,
                "--cluster", "create",
                *(f"127.0.0.1:{port}" for port in nodes.ports),
                "--cluster-replicas", "0",
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )  # fmt: skip
        if created.returncode != 0:
            pytest.fail(f"redis-cli --cluster create failed:\n{created.stdout.decode()[-2000:]}", pytrace=False)
        nodes.wait_ok()
        yield nodes
    finally:
        nodes.stop_all()
        shutil.rmtree(directory, ignore_errors=True)
