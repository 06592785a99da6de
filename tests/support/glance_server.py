"""A Glance of the tests' own, to kill: the cloud's Glance, started again on a free port."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.support.stack import REPO, Stack, free_port, wait_port


class Glance:
    """`with Glance(...) as glance:` a Glance of our own, sharing the cloud's config (or `config_dir`'s),
    database and store (as scripts/cloud starts it), on a free port: killing it
    spares the shared one."""

    def __init__(self, stack: Stack, log: Path, config_dir: str | None = None):
        self.stack, self.log = stack, log
        self.config_dir = config_dir or stack.cloud["glance_config_dir"]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        gunicorn = Path(self.stack.cloud["venvs"]["glance"]) / "bin" / "gunicorn"
        self.proc = subprocess.Popen(
            [str(gunicorn), "--bind", f"127.0.0.1:{self.port}", "-w", "1", "-k", "gthread", "--threads", "4",
             "--timeout", "600", "--no-control-socket", "--chdir", str(REPO / "scripts" / "cloud.d"),
             "glance_wsgi:application"],
            env={**os.environ, "OS_GLANCE_CONFIG_DIR": self.config_dir},
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_port(self.port, self.proc, self.log, timeout=60)
        except BaseException:
            self.kill()  # never left running when it did not start
            raise

    def __enter__(self) -> Glance:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.kill()

    def kill(self) -> None:
        """kill -9 of gunicorn and its worker (its own process group)."""
        assert self.proc
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
