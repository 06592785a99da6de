"""A real redis-server (Debian's package, scripts/deps) on a loopback port,
for the quota ledger replicas share."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support.stack import free_port, stop, wait_port, wait_until


class RedisServer:
    def __init__(self, workdir: Path, port: int | None = None):
        self.workdir, self.port = workdir, port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is required: scripts/deps installs it"
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / f"redis-{self.port}.log"
        self.proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--protected-mode", "yes"],
            stdout=log.open("wb"), stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc, log)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            stop(self.proc)

    def cli(self, *args: str) -> str:
        return subprocess.run(["redis-cli", "-p", str(self.port), *args], check=True,
                              capture_output=True, text=True, timeout=10).stdout.strip()


class SentinelGroup:
    """A primary, its replicas and three sentinels (Debian's redis-sentinel)
    watching them as `service`, all on loopback: the ledger of
    `redis+sentinel://` failing over for real. Sentinel's timings are short
    (down after DOWN_AFTER_MS without an answer) so a test sees a failover in
    seconds."""

    DOWN_AFTER_MS = 2000

    def __init__(self, workdir: Path, replicas: int = 2, service: str = "glance-gate"):
        self.workdir, self.service = workdir, service
        self.servers = [RedisServer(workdir / f"redis-{i}") for i in range(1 + replicas)]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen] = []
        self.url = f"redis+sentinel://{','.join(f'127.0.0.1:{p}' for p in self.sentinel_ports)}/{service}"

    def start(self) -> SentinelGroup:
        binary = shutil.which("redis-sentinel")
        assert binary, "redis-sentinel is required: scripts/deps installs it"
        primary, *replicas = self.servers
        primary.start()
        for replica in replicas:
            replica.start()
            replica.cli("REPLICAOF", "127.0.0.1", str(primary.port))
        wait_until(lambda: all("master_link_status:up" in r.cli("INFO", "replication") for r in replicas),
                   "the replicas never synced with the primary")
        for port in self.sentinel_ports:
            conf = self.workdir / f"sentinel-{port}.conf"  # Sentinel rewrites it: its own file each
            conf.write_text("\n".join([
                f"port {port}", "bind 127.0.0.1", f"dir {self.workdir}",
                f"sentinel monitor {self.service} 127.0.0.1 {primary.port} 2",
                f"sentinel down-after-milliseconds {self.service} {self.DOWN_AFTER_MS}",
                f"sentinel failover-timeout {self.service} 10000",
                f"sentinel parallel-syncs {self.service} {len(replicas)}"]) + "\n")
            log = self.workdir / f"sentinel-{port}.log"
            proc = subprocess.Popen([binary, str(conf)], stdout=log.open("wb"), stderr=subprocess.STDOUT)
            self.sentinels.append(proc)
            wait_port(port, proc, log)
        # Each sentinel knows the replicas and the other two before the test may fail anything.
        wait_until(lambda: all(self._master(port).get("num-slaves") == str(len(replicas))
                               and self._master(port).get("num-other-sentinels") == "2"
                               for port in self.sentinel_ports),
                   "the sentinels never saw each other and the replicas", timeout=60)
        return self

    def _sentinel(self, port: int, *args: str) -> list[str]:
        return subprocess.run(["redis-cli", "-p", str(port), *args], check=True, capture_output=True, text=True,
                              timeout=10).stdout.split()

    def _master(self, port: int) -> dict[str, str]:
        fields = self._sentinel(port, "SENTINEL", "MASTER", self.service)
        return dict(zip(fields[::2], fields[1::2]))

    def primary(self) -> RedisServer:
        """The server every sentinel names as the primary now."""
        ports = {tuple(self._sentinel(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service))
                 for port in self.sentinel_ports}
        assert len(ports) == 1, f"the sentinels disagree on the primary: {ports}"
        (_, port), = ports
        return next(server for server in self.servers if server.port == int(port))

    def stop(self) -> None:
        for proc in self.sentinels:
            if proc.poll() is None:
                stop(proc)
        for server in self.servers:
            server.stop()


# The bound README states for uploads to be answered 204 again after the
# primary dies: Sentinel's down-after-milliseconds, its election and
# promotion, and a gateway's next connection asking the sentinels.
RECOVERY_BOUND_SECONDS = SentinelGroup.DOWN_AFTER_MS / 1000 + 10
