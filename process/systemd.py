"""systemd's readiness protocol (Type=notify), as the supervisor speaks it:
READY=1 once its workers listen, RELOADING=1 around a SIGHUP reload,
STOPPING=1 at shutdown. Nothing is sent without $NOTIFY_SOCKET (not under
systemd)."""

from __future__ import annotations

import os
import socket


def notify(*states: str) -> None:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):  # an abstract socket
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(path)
        s.sendall("\n".join(states).encode())
