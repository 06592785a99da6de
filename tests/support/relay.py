"""A TCP relay on loopback in front of a real server (Glance or Keystone), for
fault tests: it takes the server away and back, holds its answers back, and
records what reached it. Given a TLS server context it serves TLS with that
context's certificate (another CA's, an expired or a wrong-name one, or one
that asks for a client certificate) in front of the plain server."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path

from tests.support.stack import free_port


def tls_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """A server context with this certificate; with client_ca, one that asks for a client certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)
    return context


class Relay:
    """on(): listens; off(): connections are refused and the open ones cut, as
    when the server is down. `sent` records every byte the relay's clients sent
    the server; `forwarded` counts the connections that reached it (with TLS:
    that got past the handshake), `refused` says why each failed handshake failed."""

    def __init__(self, target_port: int, delay: float = 0, tls: ssl.SSLContext | None = None):
        """delay: seconds each answer (each read from the server) is held back."""
        self.target = ("127.0.0.1", target_port)
        self.delay, self.tls = delay, tls
        self.sent = bytearray()
        self.forwarded = 0
        self.refused: list[str] = []
        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def on(self) -> Relay:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)  # so that off() is noticed
        self._stop.clear()
        self._thread = threading.Thread(target=self._accept, args=(self._listener,), daemon=True)
        self._thread.start()
        return self

    def off(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()
        with self._lock:
            for sock in self._open:
                _shut(sock)  # wakes the pump blocked in recv
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        if self.tls:
            try:
                client.settimeout(60)  # for the handshake
                client = self.tls.wrap_socket(client, server_side=True)
            except OSError as e:  # ssl.SSLError included
                with self._lock:
                    self.refused.append(str(e))
                client.close()
                return
        client.settimeout(None)
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        server.settimeout(None)
        with self._lock:
            self.forwarded += 1
            self._open |= {client, server}
        threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()
        self._pump(client, server, True)

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while data := src.recv(65536):
                if record:
                    with self._lock:
                        self.sent += data
                else:
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:  # the other side, or off(), closed it
            pass
        finally:  # one side ended: so does the other
            _shut(src), _shut(dst)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
