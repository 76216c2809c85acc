"""A real PgBouncer (Debian's package) in transaction pooling mode in front of the test PostgreSQL.

One is started per test session on a free loopback port, with a small server pool so that consecutive
transactions of one client really land on different server connections. Under CI=true a missing binary fails the
test, like an unreachable PostgreSQL does.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import pytest

from tests.support.databases import POSTGRES_URL
from tests.support.replicas import free_port

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
START_TIMEOUT = 15.0
START_ATTEMPTS = 3


@dataclass(frozen=True)
class Bouncer:
    url: str
    """``POSTGRES_URL`` with PgBouncer's address instead of PostgreSQL's."""


def _config(directory: Path, port: int) -> str:
    target = urlsplit(POSTGRES_URL)
    database = target.path.lstrip("/") or "test"
    return f"""
[databases]
{database} = host={target.hostname or "127.0.0.1"} port={target.port or 5432} dbname={database}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory / "users.txt"}
pool_mode = transaction
default_pool_size = 4
max_client_conn = 400
ignore_startup_parameters = extra_float_digits
logfile = {directory / "pgbouncer.log"}
pidfile = {directory / "pgbouncer.pid"}
"""


@contextlib.contextmanager
def running_pgbouncer() -> Iterator[Bouncer]:
    """Synchronous, so that a fixture of any kind can ask for it (``request.getfixturevalue``)."""
    if not os.path.exists(PGBOUNCER):
        pytest.fail("PgBouncer is not installed (apt-get install pgbouncer; .ci/run does)", pytrace=False)
    directory = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    directory.chmod(0o755)  # it drops root for the postgres user, who must read its files
    user = urlsplit(POSTGRES_URL).username or "postgres"
    (directory / "users.txt").write_text(f'"{user}" ""\n')
    failures: list[str] = []
    try:
        # A port picked free can be taken by someone else before PgBouncer binds it: try another.
        for _ in range(START_ATTEMPTS):
            started = _start(directory, user)
            if isinstance(started, str):
                failures.append(started)
                continue
            process, port = started
            drain = threading.Thread(target=_drain, args=(process.stderr,), daemon=True)
            drain.start()
            try:
                target = urlsplit(POSTGRES_URL)
                yield Bouncer(POSTGRES_URL.replace(target.netloc, f"{user}@127.0.0.1:{port}"))
            finally:
                _stop(process)
                drain.join(timeout=10)
                if process.stderr is not None:
                    process.stderr.close()
            return
        pytest.fail("PgBouncer did not start:\n" + "\n---\n".join(failures), pytrace=False)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _start(directory: Path, user: str) -> tuple[subprocess.Popen[bytes], int] | str:
    """A running PgBouncer and its port, or what it said instead of listening."""
    port = free_port()
    ini = directory / "pgbouncer.ini"
    ini.write_text(_config(directory, port))
    for path in directory.iterdir():
        path.chmod(0o644)
    as_user = ["-u", "postgres"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(directory, user="postgres")
    process = subprocess.Popen([PGBOUNCER, *as_user, str(ini)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    said = _until_listening(process.stderr, port)
    if said is None:
        return process, port
    _stop(process)
    process.stderr.close()
    log = directory / "pgbouncer.log"
    logged = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    return f"port {port}, exit status {process.returncode}; stderr:\n{said}\nlog:\n{logged}"


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _until_listening(stderr: IO[bytes], port: int) -> str | None:
    """Read PgBouncer's log until it says it listens on ``port`` (None), or return what it said instead."""
    said: list[str] = []
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stderr], [], [], deadline - time.monotonic())
        if not ready:
            break
        line = stderr.readline().decode(errors="replace")
        if not line:
            break
        said.append(line)
        if f"listening on 127.0.0.1:{port}" in line:
            return None
    return "".join(said[-20:])


def _drain(stderr: IO[bytes]) -> None:
    while stderr.readline():
        pass
