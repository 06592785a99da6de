"""systemd's readiness protocol (Type=notify): READY=1 once the listener
accepts connections, RELOADING=1 around a SIGHUP reload, STOPPING=1 at
shutdown. Nothing is sent without $NOTIFY_SOCKET (not under systemd)."""

from __future__ import annotations

import asyncio
import os
import socket
import time


def notify(*states: str) -> None:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):  # an abstract socket
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(path)
        s.sendall("\n".join(states).encode())


class Ready:
    def __init__(self, host: str, port: int):
        self.address = host, port

    def running(self) -> None:
        asyncio.get_running_loop().create_task(self._when_listening())

    async def _when_listening(self) -> None:
        # mitmproxy opens its listener in a task of its own: ready is when it accepts.
        while True:
            try:
                _, writer = await asyncio.open_connection(*self.address)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            notify("READY=1", "STATUS=serving")
            return

    def done(self) -> None:
        notify("STOPPING=1")


def reloading(reload) -> None:
    """Runs reload() between RELOADING=1 and READY=1."""
    notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
    try:
        reload()
    finally:
        notify("READY=1")
