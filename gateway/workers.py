"""``serve --workers N``: one supervisor process and N worker processes, each a whole gateway (its own ``create_app``).

The supervisor binds the listening socket once, then forks the workers, which inherit it and all accept on it.
Chosen over ``SO_REUSEPORT`` because: one accept queue is shared, so an idle worker takes the next connection
(``SO_REUSEPORT`` hashes connections to per-worker queues whatever their load) and the connections waiting in
the queue of a worker that dies are not reset (with ``SO_REUSEPORT`` they are); it works with port 0 and with any
address; and no other process can bind the same port and take a share of the traffic. Forking (rather than
spawning) shares the imported code between workers and needs no configuration hand-over: the supervisor holds no
event loop and no thread when it forks (migrations, if asked for, ran and finished before).

The supervisor is a plain ``select`` loop over two pipes: the signal wake-up pipe (SIGTERM, SIGINT, SIGCHLD) and
the ready pipe on which each worker writes its pid once it is listening. The ready line is printed when every
worker of the first generation is ready; a first-generation worker that cannot start (database unreachable,
schema not migrated) stops the whole server with status 1, as one process would. Afterwards a worker that dies is
replaced: at once the first time, then after ``Backoff`` delays while its replacements keep dying young, so a crash
loop does not spin. One SIGTERM (or SIGINT) to the supervisor is relayed to every worker, each drains its in-flight
requests for up to ``server.shutdown_timeout`` and exits; whatever is still alive ``SHUTDOWN_GRACE`` seconds later
is killed. The status is 0 when every worker stopped cleanly.

Metrics: every worker writes its samples to files in a per-run directory (``gateway.metrics.enable_multiprocess``)
that any worker's ``/metrics`` reads whole; the supervisor removes a dead worker's live gauges and the directory
on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from prometheus_client.multiprocess import mark_process_dead

from gateway import event_loop
from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.metrics import Metrics, enable_multiprocess
from gateway.server import serve, settle_heap
from gateway.text_safety import escape_unsafe

log = logging.getLogger("gateway.workers")

BOOT_FAILED = 3
"""A worker's exit status when it could not start serving."""
SHUTDOWN_GRACE = 10.0
"""Seconds past ``server.shutdown_timeout`` a worker has to close its connections and storage before SIGKILL."""
BACKLOG = 1024
_PID_BYTES = 4
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_HANDLED = (*_STOP_SIGNALS, signal.SIGCHLD)


@dataclass(frozen=True)
class Lines:
    """A worker's two pipes to its supervisor: ``ready`` (write its pid once listening) and ``lifeline`` (read;
    only the supervisor holds the write end, so end of file means the supervisor is gone, even killed)."""

    ready: int
    lifeline: int


WorkerMain = Callable[[Lines], int]
"""What a forked worker runs; returns its exit status."""


@dataclass(frozen=True)
class Backoff:
    """Delays before replacing a worker that died young (lived less than ``stable_after`` seconds)."""

    first: float = 0.5
    maximum: float = 30.0
    stable_after: float = 30.0

    def delay(self, young_deaths: int) -> float:
        """Seconds to wait after the ``young_deaths``-th consecutive early death (1: replaced at once)."""
        if young_deaths <= 1:
            return 0.0
        return float(min(self.maximum, self.first * 2 ** (young_deaths - 2)))


@dataclass
class Slot:
    """One of the N worker places; its process changes when a worker is replaced."""

    index: int
    pid: int | None = None
    started_at: float = 0.0
    ready: bool = False
    young_deaths: int = 0
    restart_at: float | None = None


def bind_listening_socket(host: str, port: int) -> socket.socket:
    """The one listening socket every worker accepts on (``OSError`` when the address cannot be bound)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
    sock.setblocking(False)
    return sock


def supervise(config: GatewayConfig, sock: socket.socket, workers: int) -> int:
    """Serve on ``sock`` (``bind_listening_socket``) with ``workers`` processes until SIGTERM or SIGINT; the exit
    status. The socket is closed on return."""
    metrics_dir = tempfile.mkdtemp(prefix="mcp-gateway-metrics-")
    bound_host, bound_port = sock.getsockname()[:2]
    url = f"http://[{bound_host}]:{bound_port}" if ":" in bound_host else f"http://{bound_host}:{bound_port}"
    factory = event_loop.loop_factory(config.server.uvloop)
    loop = "uvloop" if factory is not None else "asyncio"

    def announce() -> None:
        print(
            f"mcp-gateway listening on {url} (public URL {config.public_url}; {workers} workers, event loop {loop})",
            file=sys.stderr,
            flush=True,
        )

    def worker_main(lines: Lines) -> int:
        return run_worker(config, sock, lines, metrics_dir)

    try:
        supervisor = Supervisor(
            workers,
            worker_main,
            metrics_dir=metrics_dir,
            stop_deadline=config.server.shutdown_timeout + SHUTDOWN_GRACE,
            on_stop=sock.close,
        )
        return supervisor.run(on_ready=announce)
    finally:
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


class Supervisor:
    def __init__(
        self,
        workers: int,
        worker_main: WorkerMain,
        *,
        metrics_dir: str,
        stop_deadline: float,
        on_stop: Callable[[], None] = lambda: None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``on_stop`` runs when stopping begins (the supervisor closes its copy of the listening socket, so once
        the workers close theirs new connections are refused instead of waiting in a queue nobody reads)."""
        self.slots = [Slot(i + 1) for i in range(workers)]
        self._worker_main = worker_main
        self._on_stop = on_stop
        self._metrics_dir = metrics_dir
        self._stop_deadline = stop_deadline
        self._backoff = backoff or Backoff()
        self._clock = clock
        self._pipes: list[int] = []
        self._ready_buffer = b""

    def run(self, *, on_ready: Callable[[], None]) -> int:
        sig_r, sig_w = os.pipe()
        ready_r, ready_w = os.pipe()
        life_r, life_w = os.pipe()
        self._pipes = [sig_r, sig_w, ready_r, ready_w, life_r, life_w]
        for fd in (sig_r, sig_w, ready_r):
            os.set_blocking(fd, False)
        lines = Lines(ready=ready_w, lifeline=life_r)
        previous = {signo: signal.signal(signo, _wake_only) for signo in _HANDLED}
        previous_fd = signal.set_wakeup_fd(sig_w)
        try:
            return self._supervise(sig_r, ready_r, lines, on_ready)
        finally:
            signal.set_wakeup_fd(previous_fd)
            for signo, handler in previous.items():
                signal.signal(signo, handler)
            for fd in self._pipes:
                os.close(fd)

    def _supervise(self, sig_r: int, ready_r: int, lines: Lines, on_ready: Callable[[], None]) -> int:
        for slot in self.slots:
            self._start(slot, lines)
        announced = False
        status = 0
        stop_at: float | None = None
        killed = False
        while True:
            if stop_at is None and not announced and all(slot.ready for slot in self.slots):
                on_ready()
                announced = True
            if stop_at is not None and all(slot.pid is None for slot in self.slots):
                return status
            select.select([sig_r, ready_r], [], [], self._timeout(stop_at, killed))
            if _read_signals(sig_r) & set(_STOP_SIGNALS) and stop_at is None:
                log.info("stopping: every worker drains its in-flight requests")
                stop_at = self._stop_all()
            self._read_ready(ready_r)
            for slot, code in self._reap():
                if stop_at is not None:
                    status = status or (0 if code == 0 else 1)
                elif not announced and not slot.ready:
                    print(f"error: worker {slot.index} could not start; stopping", file=sys.stderr, flush=True)
                    status, stop_at = 1, self._stop_all()
                else:
                    self._schedule_restart(slot, code)
            now = self._clock()
            if stop_at is not None and not killed and now >= stop_at:
                killed = True
                for slot in self.slots:
                    if slot.pid is not None:
                        log.warning("worker %d did not stop in time: killed", slot.index)
                        _signal(slot.pid, signal.SIGKILL)
            if stop_at is None:
                for slot in self.slots:
                    if slot.pid is None and slot.restart_at is not None and now >= slot.restart_at:
                        self._start(slot, lines)

    def _timeout(self, stop_at: float | None, killed: bool) -> float | None:
        now = self._clock()
        if stop_at is not None:
            return None if killed else max(0.0, stop_at - now)
        pending = [slot.restart_at for slot in self.slots if slot.pid is None and slot.restart_at is not None]
        return max(0.0, min(pending) - now) if pending else None

    def _start(self, slot: Slot, lines: Lines) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self._become_worker(lines)
        slot.pid, slot.started_at, slot.ready, slot.restart_at = pid, self._clock(), False, None
        log.info("worker %d started", slot.index, extra={"worker": slot.index, "pid": pid})

    def _become_worker(self, lines: Lines) -> NoReturn:
        status = 1
        try:
            signal.set_wakeup_fd(-1)
            for signo in _HANDLED:
                signal.signal(signo, signal.SIG_DFL)
            for fd in self._pipes:
                if fd not in (lines.ready, lines.lifeline):
                    os.close(fd)
            status = self._worker_main(lines)
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            log.exception("worker failed")
        finally:
            with contextlib.suppress(Exception):
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(status)

    def _stop_all(self) -> float:
        self._on_stop()
        for slot in self.slots:
            slot.restart_at = None
            if slot.pid is not None:
                _signal(slot.pid, signal.SIGTERM)
        return self._clock() + self._stop_deadline

    def _read_ready(self, ready_r: int) -> None:
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(ready_r, 4096):
                self._ready_buffer += chunk
        while len(self._ready_buffer) >= _PID_BYTES:
            pid = int.from_bytes(self._ready_buffer[:_PID_BYTES], "little")
            self._ready_buffer = self._ready_buffer[_PID_BYTES:]
            for slot in self.slots:
                if slot.pid == pid:
                    slot.ready = True

    def _reap(self) -> list[tuple[Slot, int]]:
        """The workers that exited since the last call, with their exit codes (negative: killed by that signal)."""
        dead: list[tuple[Slot, int]] = []
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return dead
            if pid == 0:
                return dead
            mark_process_dead(pid, path=self._metrics_dir)  # type: ignore[no-untyped-call]
            for slot in self.slots:
                if slot.pid == pid:
                    slot.pid = None
                    dead.append((slot, os.waitstatus_to_exitcode(wait_status)))

    def _schedule_restart(self, slot: Slot, code: int) -> None:
        now = self._clock()
        if now - slot.started_at >= self._backoff.stable_after:
            slot.young_deaths = 0
        slot.young_deaths += 1
        delay = self._backoff.delay(slot.young_deaths)
        slot.restart_at = now + delay
        how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
        log.warning(
            "worker %d %s; replacing it in %.1f s",
            slot.index,
            how,
            delay,
            extra={"worker": slot.index, "exit_code": code},
        )


def run_worker(config: GatewayConfig, sock: socket.socket, lines: Lines, metrics_dir: str) -> int:
    """A worker's whole life: a gateway on the inherited socket until SIGTERM, SIGINT or the supervisor's end."""
    enable_multiprocess(metrics_dir)
    return event_loop.run(_serve_worker(config, sock, lines, metrics_dir), use_uvloop=config.server.uvloop)


async def _serve_worker(config: GatewayConfig, sock: socket.socket, lines: Lines, metrics_dir: str) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signo in _STOP_SIGNALS:
        loop.add_signal_handler(signo, stop.set)

    def supervisor_gone() -> None:
        log.warning("the supervisor is gone: stopping")
        loop.remove_reader(lines.lifeline)
        stop.set()

    loop.add_reader(lines.lifeline, supervisor_gone)
    app = create_app(config, metrics=Metrics(multiprocess_dir=metrics_dir))
    listening = TakingTurns.sharing(sock)
    sock.close()  # one handle per worker, closed when it stops accepting (then a stopped server refuses at once)
    started = False
    try:
        async with serve(app, config.server.host, 0, sock=listening):
            started = True
            settle_heap()
            log.info("worker %d serving on %s", os.getpid(), event_loop.loop_name(loop), extra={"pid": os.getpid()})
            os.write(lines.ready, os.getpid().to_bytes(_PID_BYTES, "little"))
            os.close(lines.ready)
            await stop.wait()
    except Exception as exc:
        if started:
            raise
        print(f"error: worker {os.getpid()} could not start: {escape_unsafe(str(exc))}", file=sys.stderr, flush=True)
        return BOOT_FAILED
    return 0


class TakingTurns(socket.socket):
    """A worker's handle on the shared listening socket that accepts one connection per event-loop turn.

    Every worker is woken when connections wait; one that accepted as many as it could in one go would take a
    whole burst (a load balancer opening its pool, a benchmark's 64 connections) and keep those long-lived
    connections while its siblings idle. Taking one per turn (nginx's ``multi_accept off``) lets every awake worker
    take its share, and a busy worker, whose turns are longer, takes fewer."""

    _turn_taken = False

    @classmethod
    def sharing(cls, sock: socket.socket) -> TakingTurns:
        """A new handle (its own descriptor) on ``sock``'s listening socket."""
        return cls(sock.family, sock.type, sock.proto, fileno=os.dup(sock.fileno()))

    def accept(self) -> tuple[socket.socket, Any]:
        if self._turn_taken:
            raise BlockingIOError
        accepted = super().accept()
        self._turn_taken = True
        asyncio.get_running_loop().call_soon(self._next_turn)
        return accepted

    def _next_turn(self) -> None:
        self._turn_taken = False


def _read_signals(fd: int) -> set[int]:
    received: set[int] = set()
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 512):
            received.update(chunk)
    return received


def _signal(pid: int, signo: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signo)


def _wake_only(signo: int, frame: object) -> None:
    """The signal's number reaches the supervisor through the wake-up pipe; nothing else to do here."""
