"""`glance-gate`'s supervisor: N worker processes on one address.

Each worker is the lean mitmproxy Master of process/main.py. The supervisor
binds one SO_REUSEPORT socket per worker slot and keeps it open for its whole
life: the kernel spreads connections over the slots, and a connection to a slot
whose worker is restarting waits in that socket's queue instead of being
refused. It never runs mitmproxy itself.

Signals: SIGTERM/SIGINT drain every worker (README "Workers"), SIGHUP reloads
the config by a rolling restart, a dead worker is restarted with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from addons import metrics
from process import systemd
from policy import config as configuration
from policy.exceptions import ConfigError

log = logging.getLogger("glance_gate.supervisor")

BACKLOG = 1024  # each slot's queue, which also holds connections while its worker restarts
READY_SECONDS = 60  # a worker that does not listen by then is taken as failed
BACKOFF_SECONDS = (0.5, 1, 2, 4, 8, 16, 30)
STABLE_SECONDS = 60  # a worker that lived this long resets its slot's backoff
KILL_SECONDS = 10  # past drain_seconds, a worker still running at shutdown is killed
WORKER = (sys.executable, "-m", "process.main", "--worker")  # and --config: the snapshot
NEEDS_RESTART = ("listen", "metrics", "workers")
# glibc's malloc, read by each worker at its start (an operator's own values win):
# by default it maps and unmaps a fresh region for each large buffer (a 1 MiB
# read of a download), ~480,000 page faults and 2-3 CPU-s per GiB moved.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(4 * 1024 * 1024), "MALLOC_TRIM_THRESHOLD_": str(32 * 1024 * 1024)}


@dataclass
class Child:
    """One worker process, in its slot."""
    slot: int
    proc: subprocess.Popen
    started: float = field(default_factory=time.monotonic)
    ready: bool = False


class Supervisor:
    def __init__(self, config_path: str, config: configuration.Config):
        self.config_path, self.config = config_path, config
        self.state = Path(tempfile.mkdtemp(prefix="glance-gate-"))
        self.metrics_dir = self.state / "metrics"
        self.metrics_dir.mkdir()
        self.generation = 0
        self.snapshot = self._snapshot(Path(config_path).read_bytes())
        self.sockets: list[socket.socket] = []
        self.workers: dict[int, Child] = {}  # slot -> its serving worker
        self.draining: dict[int, Child] = {}  # pid -> an old worker finishing its requests
        self.alive: dict[int, Child] = {}  # pid -> every worker not yet reaped, also one starting
        self.failures: dict[int, int] = {}  # slot -> quick deaths in a row
        self.cpu_of_dead = 0.0  # CPU seconds of reaped workers, so the counter never goes back
        self.restarts = 0
        self.stopping = False
        self.exit_code = 0
        self._reloading: asyncio.Task | None = None
        self._done = asyncio.Event()

    def _snapshot(self, text: bytes) -> Path:
        """Workers read this copy: a restart or a later slot of a rolling restart
        gets the config that was validated, whatever the file holds meanwhile."""
        self.generation += 1
        path = self.state / f"config-{self.generation}.toml"
        path.write_bytes(text)
        return path

    def _bind(self) -> None:
        gw = self.config.gateway
        for _ in range(gw.workers):
            s = socket.socket(socket.AF_INET6 if ":" in gw.listen.host else socket.AF_INET)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(gw.listen)
            s.listen(BACKLOG)
            self.sockets.append(s)

    def spawn(self, slot: int) -> Child:
        sock = self.sockets[slot]
        env = {**MALLOC_ENV, **{k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"},  # systemd hears the supervisor
               metrics.MULTIPROC_ENV: str(self.metrics_dir),
               "GLANCE_GATE_WORKER": str(slot), "GLANCE_GATE_LISTEN_FD": str(sock.fileno()),
               "GLANCE_GATE_SUPERVISOR": str(os.getpid())}
        ready_r, ready_w = os.pipe()
        env["GLANCE_GATE_READY_FD"] = str(ready_w)
        proc = subprocess.Popen([*WORKER, "--config", str(self.snapshot)],
                                pass_fds=(sock.fileno(), ready_w), env=env)
        os.close(ready_w)
        worker = self.alive[proc.pid] = Child(slot, proc)
        asyncio.get_running_loop().run_in_executor(None, self._await_ready, worker, ready_r)
        log.info("worker %d started (pid %d, config generation %d)", slot, proc.pid, self.generation)
        return worker

    @staticmethod
    def _await_ready(worker: Child, ready_r: int) -> None:
        """On a thread: the worker writes one byte once it listens; EOF if it died first."""
        try:
            worker.ready = os.read(ready_r, 1) == b"1"
        finally:
            os.close(ready_r)

    async def _ready(self, worker: Child) -> bool:
        deadline = time.monotonic() + READY_SECONDS
        while not worker.ready and worker.proc.returncode is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return worker.ready and worker.proc.returncode is None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        gw = self.config.gateway
        try:
            self._bind()
        except OSError as e:
            return self._cannot(f"listen on {gw.listen.host}:{gw.listen.port}", e)
        try:
            metrics.serve_workers(self.config, self.metrics_dir,
                                  metrics.WorkerProcesses(self.process_totals, lambda: self.restarts))
        except OSError as e:
            return self._cannot(f"serve metrics on {gw.metrics.host}:{gw.metrics.port}", e)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        loop.add_signal_handler(signal.SIGCHLD, self.reap)
        for slot in range(self.config.gateway.workers):
            self.workers[slot] = self.spawn(slot)
        if not all([await self._ready(w) for w in list(self.workers.values())]):  # a restart replaces one
            log.error("a worker did not start: stopping")
            self.exit_code = 1
            self.stop()
        else:
            systemd.notify("READY=1", "STATUS=serving")
        await self._done.wait()
        return self.exit_code

    def _cannot(self, what: str, e: OSError) -> int:
        print(f"glance-gate: cannot {what}: {e.strerror}", file=sys.stderr)
        shutil.rmtree(self.state, ignore_errors=True)
        return 2

    def stop(self) -> None:
        """Drain: every worker stops accepting, finishes what is in flight (up to
        gateway.drain_seconds), then exits; the supervisor exits after the last."""
        if self.stopping:
            return
        self.stopping = True
        systemd.notify("STOPPING=1")
        log.info("draining %d workers", len(self.workers) + len(self.draining))
        for s in self.sockets:
            s.close()  # the workers' own descriptors keep serving what was queued
        for w in [*self.workers.values(), *self.draining.values()]:
            _signal(w, signal.SIGTERM)
        asyncio.get_running_loop().call_later(self.config.gateway.drain_seconds + KILL_SECONDS, self._kill_all)
        self._finish_if_done()

    def _kill_all(self) -> None:
        for w in [*self.workers.values(), *self.draining.values()]:
            _signal(w, signal.SIGKILL)

    def _finish_if_done(self) -> None:
        if self.stopping and not self.workers and not self.draining:
            shutil.rmtree(self.state, ignore_errors=True)
            self._done.set()

    def reap(self) -> None:
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.cpu_of_dead += usage.ru_utime + usage.ru_stime
            metrics.worker_gone(self.metrics_dir, pid)
            if worker := self.alive.pop(pid, None):
                worker.proc.returncode = os.waitstatus_to_exitcode(status)  # we reaped it, not Popen
                self._gone(worker)

    def _gone(self, worker: Child) -> None:
        pid, code = worker.proc.pid, worker.proc.returncode
        if self.draining.pop(pid, None):
            log.info("worker %d (pid %d) drained, exit %d", worker.slot, pid, code)
        elif self.workers.get(worker.slot) is worker:
            del self.workers[worker.slot]
            if not self.stopping:
                self._restart_later(worker, code)
        self._finish_if_done()

    def _restart_later(self, worker: Child, code: int) -> None:
        slot = worker.slot
        lived = time.monotonic() - worker.started
        self.failures[slot] = 0 if lived >= STABLE_SECONDS else self.failures.get(slot, 0) + 1
        delay = BACKOFF_SECONDS[min(self.failures[slot], len(BACKOFF_SECONDS) - 1)]
        log.error("worker %d (pid %d) died (exit %d) after %.0f s: restarting in %.1f s",
                  slot, worker.proc.pid, code, lived, delay)
        self.restarts += 1
        asyncio.get_running_loop().call_later(delay, self._restart, slot)

    def _restart(self, slot: int) -> None:
        if not self.stopping and slot not in self.workers:
            self.workers[slot] = self.spawn(slot)

    def reload(self) -> None:
        if self.stopping or (self._reloading and not self._reloading.done()):
            log.warning("reload ignored: %s", "stopping" if self.stopping else "a reload is under way")
            return
        systemd.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        self._reloading = asyncio.get_running_loop().create_task(self._reload())
        self._reloading.add_done_callback(_reloaded)

    async def _reload(self) -> None:
        """Rolling restart: per slot, a new worker starts on the same socket, and
        once it listens the old one drains. A config that does not load, or on
        which the first new worker does not start, changes nothing."""
        try:
            text = Path(self.config_path).read_bytes()
            new = configuration.parse(configuration.parse_toml(text, self.config_path))
        except (OSError, ConfigError) as e:
            log.error("reload refused, the running config stays: %s", e)
            return
        if changed := [k for k in NEEDS_RESTART
                       if getattr(new.gateway, k) != getattr(self.config.gateway, k)]:
            log.error("reload refused, the running config stays: gateway.%s changed, which needs a restart",
                      changed[0])
            return
        previous = (self.config, self.snapshot)
        self.config, self.snapshot = new, self._snapshot(text)
        for slot in range(new.gateway.workers):
            if self.stopping:
                return
            fresh = self.spawn(slot)
            if not await self._ready(fresh) or self.stopping:
                _signal(fresh, signal.SIGKILL)
                if slot == 0:
                    self.config, self.snapshot = previous
                    log.error("reload refused, the running config stays: the new worker did not start")
                    return
                log.error("worker %d did not start on the new config", slot)
                continue  # its old worker keeps serving; reaped when it exits
            old = self.workers.get(slot)
            self.workers[slot] = fresh
            if old:
                self.draining[old.proc.pid] = old
                _signal(old, signal.SIGTERM)
        log.info("reloaded: config generation %d", self.generation)

    def process_totals(self) -> tuple[list[int], float, int]:
        """Live pids (the supervisor's first), CPU seconds of workers gone, and
        how many workers serve (listen) now."""
        live = list(self.alive)
        serving = sum(w.ready and w.proc.returncode is None for w in self.workers.values())
        return [os.getpid(), *live], self.cpu_of_dead, serving


def _reloaded(task: asyncio.Task) -> None:
    if not task.cancelled() and (e := task.exception()):
        log.error("reload failed, the running config stays: %r", e, exc_info=e)
    systemd.notify("READY=1")


def _signal(worker: Child, sig: int) -> None:
    if worker.proc.returncode is None:
        try:
            os.kill(worker.proc.pid, sig)
        except ProcessLookupError:
            pass


def supervise(config_path: str, config: configuration.Config) -> int:
    logging.basicConfig(level=logging.INFO, format="glance-gate supervisor: %(message)s", stream=sys.stderr)
    return asyncio.run(Supervisor(config_path, config).run())
