"""A stand-in for process/main.py's worker, for tests/unit/test_supervisor.py:
started as the supervisor starts a worker (its socket, ready pipe and config
snapshot), it records what it was given and what happened to it, in the
directory named by its first argument.

Its mode (file `mode-<slot>`, else `mode`, else "serve"):
  serve     says it listens, exits 0 on SIGTERM
  stubborn  says it listens, ignores SIGTERM
  hold      says it listens only once it gets SIGUSR1
  fail      exits 3 before it listens"""

import ctypes
import json
import os
import select
import signal
import socket
import sys
from pathlib import Path

ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: never outlives the test
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
record = Path(sys.argv[1])
slot = os.environ["GLANCE_GATE_WORKER"]
mode = next((f.read_text().strip() for f in (record / f"mode-{slot}", record / "mode") if f.exists()), "serve")


def event(what: str) -> None:
    """One line of the shared events file, in the order they happen (O_APPEND)."""
    fd = os.open(record / "events", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{what} {os.getpid()} {slot}\n".encode())
    os.close(fd)


def terminated(*_) -> None:
    event("term")
    if mode != "stubborn":
        sys.exit(0)


signal.signal(signal.SIGTERM, terminated)
listen_fd = int(os.environ["GLANCE_GATE_LISTEN_FD"])
listening = socket.socket(fileno=listen_fd)
queued = b""
if select.select([listening], [], [], 0)[0]:  # a connection that waited for this worker
    conn, _ = listening.accept()
    queued = conn.recv(100)
    conn.close()
config = sys.argv[sys.argv.index("--config") + 1]
(record / f"{os.getpid()}.json").write_text(json.dumps({
    "slot": int(slot), "config": config, "config_text": Path(config).read_text(),
    "listen": list(listening.getsockname()), "inode": os.fstat(listen_fd).st_ino,
    "accepting": listening.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN),
    "queued": queued.decode(), "env": {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "NOTIFY_",
                                                                                          "GLANCE_GATE_"))}}))
event("started")
if mode == "fail":
    sys.exit(3)
if mode == "hold":
    signal.sigwait({signal.SIGUSR1})
event("ready")
os.write(int(os.environ["GLANCE_GATE_READY_FD"]), b"1")
while True:
    signal.pause()
