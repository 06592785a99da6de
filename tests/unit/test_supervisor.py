"""The supervisor's own decisions (process/supervisor.py), offline: its workers
are stand-ins (tests/support/stand_in_worker.py), real child processes started
as it starts a worker, on the socket and config snapshot it gives them. What
real workers do with real traffic through the same decisions (kill -9 mid-
upload, SIGHUP under load, a drain) is proven by tests/stack/test_workers.py."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from addons import metrics
from policy import config as configuration
from process import supervisor
from process.supervisor import Supervisor
from tests.support.stack import free_port

SERVE_WORKERS = metrics.serve_workers
STAND_IN = Path(__file__).resolve().parents[1] / "support" / "stand_in_worker.py"


class Workers:
    """What the stand-in workers recorded: each one's start, and the events of all."""

    def __init__(self, path: Path):
        self.path = path
        path.mkdir()

    def mode(self, mode: str, slot: int | None = None) -> None:
        (self.path / ("mode" if slot is None else f"mode-{slot}")).write_text(mode)

    def events(self, what: str | None = None) -> list[tuple[str, int, int]]:
        path = self.path / "events"
        lines = path.read_text().splitlines() if path.exists() else []
        found = [(name, int(pid), int(slot)) for name, pid, slot in (line.split() for line in lines)]
        return [e for e in found if what is None or e[0] == what]

    def pids(self, what: str = "started") -> list[int]:
        return [pid for _, pid, _ in self.events(what)]

    def record(self, pid: int) -> dict:
        return json.loads((self.path / f"{pid}.json").read_text())


class Notified:
    """What systemd would hear: $NOTIFY_SOCKET, a real datagram socket."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def __call__(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages


async def until(check, what: str, timeout: float = 30):
    """check()'s first truthy value, polled in the loop; fails naming `what`
    after timeout seconds (a guard against a hang, never a measure)."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what}: not after {timeout} s"
        await asyncio.sleep(0.02)
    return value


def config_text(port: int, metrics_port: int, workers: int = 1, drain_seconds: float = 30) -> str:
    return f"""
[gateway]
listen = "127.0.0.1:{port}"
upstream = "http://127.0.0.1:2"
metrics = "127.0.0.1:{metrics_port}"
workers = {workers}
drain_seconds = {drain_seconds}
[keystone]
url = "http://127.0.0.1:3"
username = "u"
password = "p"
project = "p"
[quota]
default_bytes = -1
ledger = "redis"
redis_url = "redis://127.0.0.1:1"
"""


class Harness:
    def __init__(self, tmp_path: Path, monkeypatch, caplog):
        self.workers = Workers(tmp_path / "workers")
        self.config = tmp_path / "config.toml"
        self.port, self.metrics_port = free_port(), free_port()
        self.notified = Notified(tmp_path / "notify")
        self.caplog = caplog
        self.served: list[metrics.WorkerProcesses] = []
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        monkeypatch.setattr(supervisor, "WORKER", (sys.executable, str(STAND_IN), str(self.workers.path)))
        monkeypatch.setattr(supervisor, "BACKOFF_SECONDS", (0.0, 0.1, 0.2, 0.3))
        monkeypatch.setattr(metrics, "serve_workers", lambda config, directory, processes:
                            self.served.append(processes))
        caplog.set_level(logging.INFO, "glance_gate.supervisor")

    def text(self, **settings) -> str:
        return config_text(self.port, self.metrics_port, **settings)

    def write(self, **settings) -> str:
        self.config.write_text(text := self.text(**settings))
        return text

    def logged(self, text: str) -> list[str]:
        return [m for m in self.caplog.messages if text in m]

    def run(self, scenario, **settings):
        """Runs the supervisor on the config `settings` make, and scenario(supervisor,
        its run() task) beside it; whatever happens, no stand-in outlives it."""
        self.write(**settings)

        async def main():
            sup = Supervisor(str(self.config), configuration.load(self.config))
            running = asyncio.create_task(sup.run())
            try:
                return await asyncio.wait_for(scenario(sup, running), 120)  # a guard against a hang
            finally:
                sup.stopping = True  # no restart from here on
                for child in list(sup.alive.values()):
                    child.proc.kill()
                    child.proc.wait()
                if not running.done():
                    running.cancel()
                for s in sup.sockets:
                    s.close()
        return asyncio.run(main())

    async def serving(self, sup: Supervisor, count: int) -> None:
        await until(lambda: "READY=1\nSTATUS=serving" in self.notified(), "the workers never listened")
        assert len(sup.workers) == count


@pytest.fixture
def harness(tmp_path, monkeypatch, caplog):
    harness = Harness(tmp_path, monkeypatch, caplog)
    yield harness
    harness.notified.sock.close()


def test_each_worker_gets_its_own_socket_and_the_validated_config_and_systemd_hears_only_the_supervisor(
        harness, monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "12345")  # an operator's own value

    async def scenario(sup, running):
        await harness.serving(sup, 2)
        pids = harness.workers.pids()
        live, cpu_of_dead, serving = sup.process_totals()
        assert (live[0], sorted(live[1:]), cpu_of_dead, serving) == (os.getpid(), sorted(pids), 0.0, 2)
        [processes] = harness.served
        assert {m.name: m.samples[0].value for m in processes.collect()
                if m.name.startswith("glance_gate_worker")} == {"glance_gate_workers": 2,
                                                                "glance_gate_worker_restarts": 0}
        sup.stop()
        return pids, await running

    pids, code = harness.run(scenario, workers=2)
    assert code == 0
    records = [harness.workers.record(pid) for pid in pids]
    assert sorted(r["slot"] for r in records) == [0, 1]
    for r in records:
        assert r["listen"] == ["127.0.0.1", harness.port] and r["accepting"] == 1
        assert r["config"] != str(harness.config) and r["config_text"] == harness.config.read_text(), \
            "a snapshot of the file it validated"
        assert "NOTIFY_SOCKET" not in r["env"], "systemd hears the supervisor, not each worker"
        assert r["env"]["MALLOC_MMAP_THRESHOLD_"] == str(4 * 1024 * 1024)
        assert r["env"]["MALLOC_TRIM_THRESHOLD_"] == "12345"
        assert r["env"]["GLANCE_GATE_SUPERVISOR"] == str(os.getpid())
    assert records[0]["inode"] != records[1]["inode"], "one socket per slot, spread by the kernel"
    assert harness.notified() == ["READY=1\nSTATUS=serving", "STOPPING=1"]


def test_a_dead_worker_is_restarted_on_its_slots_socket_and_snapshot_with_backoff(harness):
    async def scenario(sup, running):
        await harness.serving(sup, 1)
        original = harness.config.read_text()
        harness.config.write_text("not a config: a restart reads the snapshot, not this")
        first = harness.workers.pids()[0]
        os.kill(first, signal.SIGKILL)
        await until(lambda: 0 not in sup.workers, "the dead worker was not reaped")
        # no worker at all now: a client connecting waits in the slot's queue
        client = socket.create_connection(("127.0.0.1", harness.port), timeout=10)
        client.sendall(b"queued")
        await until(lambda: len(harness.workers.pids("ready")) == 2, "no restart")
        client.close()
        second = harness.workers.pids()[1]
        assert sup.workers[0].proc.pid == second
        for _ in range(3):  # quick deaths in a row: the backoff grows, to its last step
            started = len(harness.workers.pids("ready"))
            os.kill(sup.workers[0].proc.pid, signal.SIGKILL)
            await until(lambda: len(harness.workers.pids("ready")) == started + 1, "no restart")
        sup.workers[0].started -= supervisor.STABLE_SECONDS  # one that lived long resets it
        os.kill(sup.workers[0].proc.pid, signal.SIGKILL)
        await until(lambda: len(harness.workers.pids("ready")) == 6, "no restart")
        restarts = harness.served[0].restarts()
        sup.stop()
        return original, first, second, restarts, await running

    original, first, second, restarts, code = harness.run(scenario)
    assert code == 0 and restarts == 5
    assert harness.workers.record(second)["config_text"] == original
    assert harness.workers.record(second)["inode"] == harness.workers.record(first)["inode"]
    assert harness.workers.record(second)["queued"] == "queued", "the connection was not refused"
    assert [m.rsplit("restarting in ", 1)[1] for m in harness.logged("died (exit -9)")] == [
        "0.1 s", "0.2 s", "0.3 s", "0.3 s", "0.0 s"]
    assert harness.logged(f"worker 0 (pid {first}) died (exit -9) after ")


def test_a_worker_that_never_listens_stops_the_supervisor_with_exit_1(harness):
    harness.workers.mode("fail", slot=1)

    async def scenario(sup, running):
        return await running

    assert harness.run(scenario, workers=2) == 1
    assert harness.logged("a worker did not start: stopping")
    assert harness.notified() == ["STOPPING=1"], "never READY"
    assert sorted(slot for _, _, slot in harness.workers.events("term")) == [0], "the other is drained"


def test_an_address_it_cannot_bind_is_exit_2_naming_it(harness, capsys):
    async def scenario(sup, running):
        return await running, sup.state

    with socket.socket() as taken:  # no SO_REUSEPORT: no one else may listen there
        taken.bind(("127.0.0.1", harness.port))
        taken.listen()
        code, state = harness.run(scenario)
    assert code == 2 and not state.exists()
    assert capsys.readouterr().err == f"glance-gate: cannot listen on 127.0.0.1:{harness.port}: Address already in use\n"
    assert harness.workers.events() == []


def test_a_metrics_address_it_cannot_serve_is_exit_2_naming_it(harness, monkeypatch, capsys):
    monkeypatch.setattr(metrics, "serve_workers", SERVE_WORKERS)  # the real /metrics server

    async def scenario(sup, running):
        return await running

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", harness.metrics_port))
        taken.listen()
        code = harness.run(scenario)
    assert code == 2
    assert capsys.readouterr().err == f"glance-gate: cannot serve metrics on 127.0.0.1:{harness.metrics_port}: " \
                                      "Address already in use\n"
    assert harness.workers.events() == []


def test_sighup_rolls_each_slot_to_a_new_worker_on_the_new_config_then_drains_the_old(harness):
    async def scenario(sup, running):
        await harness.serving(sup, 2)
        old = {slot: w.proc.pid for slot, w in sup.workers.items()}
        new_text = harness.write(workers=2, drain_seconds=7)
        sup.reload()
        await sup._reloading
        new = {slot: w.proc.pid for slot, w in sup.workers.items()}
        await until(lambda: not sup.draining and len(sup.alive) == 2, "the old workers did not drain")
        sup.stop()
        return old, new, new_text, sup.config, await running

    old, new, new_text, config, code = harness.run(scenario, workers=2)
    assert code == 0 and config.gateway.drain_seconds == 7
    assert harness.logged("reloaded: config generation 2")
    events = [(name, pid) for name, pid, _ in harness.workers.events() if name in ("ready", "term")]
    for slot in (0, 1):
        assert new[slot] != old[slot]
        assert harness.workers.record(new[slot])["config_text"] == new_text
        assert harness.workers.record(new[slot])["inode"] == harness.workers.record(old[slot])["inode"]
        assert events.index(("ready", new[slot])) < events.index(("term", old[slot])), \
            "the old worker drains once the new one listens"
        assert harness.logged(f"worker {slot} (pid {old[slot]}) drained, exit 0")
    [serving, reloading, ready, stopping] = harness.notified()
    assert (serving, ready, stopping) == ("READY=1\nSTATUS=serving", "READY=1", "STOPPING=1")
    assert reloading.startswith("RELOADING=1\nMONOTONIC_USEC=")


def test_a_reload_while_one_is_under_way_is_ignored_and_the_next_one_is_not(harness):
    async def scenario(sup, running):
        await harness.serving(sup, 1)
        harness.workers.mode("hold")  # the new worker listens only when the test says
        harness.write(drain_seconds=7)
        sup.reload()
        first = sup._reloading
        await until(lambda: len(harness.workers.pids()) == 2, "no new worker")
        live, _, serving = sup.process_totals()
        assert len(live) == 3 and serving == 1, "a worker starting is alive, not serving"
        sup.reload()
        assert sup._reloading is first and not first.done()
        os.kill(harness.workers.pids()[1], signal.SIGUSR1)
        await first
        harness.workers.mode("serve")
        harness.write(drain_seconds=9)
        sup.reload()
        await sup._reloading
        sup.stop()
        return sup.config, await running

    config, code = harness.run(scenario)
    assert code == 0 and config.gateway.drain_seconds == 9
    assert harness.logged("reload ignored: a reload is under way")
    assert len(harness.workers.pids()) == 3, "one new worker per reload accepted"
    assert harness.logged("reloaded: config generation 2") and harness.logged("reloaded: config generation 3")
    assert [m.split("\n")[0] for m in harness.notified()] == [
        "READY=1", "RELOADING=1", "READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]


def test_a_reload_that_cannot_load_or_would_need_a_restart_changes_nothing(harness):
    async def scenario(sup, running):
        await harness.serving(sup, 1)
        running_config, snapshot = sup.config, sup.snapshot
        for text in ("[gateway\n", config_text(free_port(), harness.metrics_port), harness.text(workers=2),
                     harness.text().replace("drain_seconds = 30", "drain_seconds = -1")):
            harness.config.write_text(text)
            sup.reload()
            await sup._reloading
            assert (sup.config, sup.snapshot, sup.generation) == (running_config, snapshot, 1)
        sup.stop()
        return await running

    assert harness.run(scenario) == 0
    refused = harness.logged("reload refused, the running config stays")
    assert len(refused) == 4
    assert "is not valid TOML" in refused[0]
    assert refused[1].endswith("gateway.listen changed, which needs a restart")
    assert refused[2].endswith("gateway.workers changed, which needs a restart")
    assert "gateway.drain_seconds" in refused[3]
    assert len(harness.workers.pids()) == 1
    assert [m.split("\n")[0] for m in harness.notified()] == [
        "READY=1", *["RELOADING=1", "READY=1"] * 4, "STOPPING=1"]


def test_a_reload_whose_first_new_worker_does_not_start_keeps_the_running_config(harness):
    async def scenario(sup, running):
        await harness.serving(sup, 1)
        original = harness.config.read_text()
        serving = sup.workers[0]
        harness.workers.mode("fail")
        harness.write(drain_seconds=7)
        sup.reload()
        await sup._reloading
        assert sup.workers[0] is serving and sup.config.gateway.drain_seconds == 30
        harness.workers.mode("serve")
        os.kill(serving.proc.pid, signal.SIGKILL)  # its restart runs on the config that stays
        await until(lambda: len(harness.workers.pids("ready")) == 2, "no restart")
        restarted = sup.workers[0].proc.pid
        sup.stop()
        return original, serving.proc.pid, restarted, await running

    original, serving, restarted, code = harness.run(scenario)
    assert code == 0
    assert harness.logged("reload refused, the running config stays: the new worker did not start")
    assert not harness.logged("reloaded")
    assert ("term", serving) not in [(name, pid) for name, pid, _ in harness.workers.events()], "never drained"
    assert harness.workers.record(restarted)["config_text"] == original


def test_a_later_slot_whose_new_worker_does_not_start_keeps_its_old_worker(harness):
    async def scenario(sup, running):
        await harness.serving(sup, 2)
        old = {slot: w for slot, w in sup.workers.items()}
        harness.workers.mode("fail", slot=1)
        harness.write(workers=2, drain_seconds=7)
        sup.reload()
        await sup._reloading
        now = dict(sup.workers)
        sup.stop()
        return old, now, await running

    old, now, code = harness.run(scenario, workers=2)
    assert code == 0
    assert now[0] is not old[0] and now[1] is old[1]
    assert harness.logged("worker 1 did not start on the new config")
    assert harness.logged("reloaded: config generation 2")


def test_sigterm_drains_every_worker_and_kills_one_that_outlasts_drain_seconds(harness, monkeypatch):
    monkeypatch.setattr(supervisor, "KILL_SECONDS", 0)
    harness.workers.mode("stubborn", slot=1)

    async def scenario(sup, running):
        await harness.serving(sup, 2)
        workers = dict(sup.workers)
        sup.stop()
        sup.stop()
        sup.reload()
        code = await running
        with pytest.raises(ConnectionRefusedError):  # the last worker gone: its socket closed too
            socket.create_connection(("127.0.0.1", harness.port), timeout=10)
        return workers, sup.restarts, code

    workers, restarts, code = harness.run(scenario, workers=2, drain_seconds=1)
    assert code == 0 and restarts == 0
    assert sorted(slot for _, _, slot in harness.workers.events("term")) == [0, 1], "both told to drain"
    assert workers[0].proc.returncode == 0, "drained by itself"
    assert workers[1].proc.returncode == -signal.SIGKILL, "killed once drain_seconds passed"
    assert harness.logged("draining 2 workers")
    assert harness.logged("reload ignored: stopping")
    assert harness.notified() == ["READY=1\nSTATUS=serving", "STOPPING=1"]
