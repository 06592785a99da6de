"""A TLS server with a chosen certificate in front of a plain one (the real
Glance or Keystone): a dependency with another CA's, an expired or a
wrong-name certificate, or one that asks for a client certificate. It counts
the connections it forwarded, i.e. that got past the handshake."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path


class TlsRelay:
    def __init__(self, target: tuple[str, int], cert: Path, key: Path, client_ca: Path | None = None):
        self.target = target
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        if client_ca:
            self.context.verify_mode = ssl.CERT_REQUIRED
            self.context.load_verify_locations(client_ca)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.listener.getsockname()[1]}"
        self.forwarded = 0
        self.refused: list[str] = []  # why each failed handshake failed
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(60)
        try:
            client = self.context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError) as e:
            with self._lock:
                self.refused.append(str(e))
            conn.close()
            return
        with self._lock:
            self.forwarded += 1
        upstream = socket.create_connection(self.target, timeout=60)
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream)

    def close(self) -> None:
        self.listener.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
