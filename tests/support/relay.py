"""A TCP relay for fault tests: takes a server away and back, and records
what reached it."""

from __future__ import annotations

import socket
import threading
import time

from tests.support.stack import free_port


class Relay:
    """A TCP relay on loopback in front of a real server. off(): connections
    are refused and the open ones cut, as when the server is down; on(): back.
    `sent` records every byte the relay's clients sent the server."""

    def __init__(self, target_port: int, delay: float = 0):
        """delay: seconds each answer (each read from the server) is held back."""
        self.target = ("127.0.0.1", target_port)
        self.delay = delay
        self.sent = bytearray()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def on(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)  # so that off() is noticed
        self._stop.clear()
        self._thread = threading.Thread(target=self._accept, args=(self._listener,), daemon=True)
        self._thread.start()

    def off(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()
        with self._lock:
            for sock in self._open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the pump blocked in recv
                except OSError:
                    pass
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            client.settimeout(None)
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open |= {client, server}
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b, a is client), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while data := src.recv(65536):
                if record:
                    with self._lock:
                        self.sent += data
                else:
                    time.sleep(self.delay)
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:  # the other side, or off(), closed it
            pass
