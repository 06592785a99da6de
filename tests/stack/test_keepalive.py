"""Stale upstream connections never cost a request. gunicorn in front of
Glance closes a connection idle for its keep-alive (2 s); a client whose
requests came about that far apart once got mitmproxy's 502 when the gateway
reused the upstream connection Glance was closing at that moment. Swept
across the keep-alive, no request fails: an image create (not idempotent)
because the gateway drops an upstream connection idle past
`upstream_keepalive_seconds`, and a GET even with that bound raised past
gunicorn's, because it is sent again on a fresh connection. That the sweep
meets a closing connection depends on timing; an upstream that closes every
reused connection unanswered proves the retry every time."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.stack import start_gateway, stop

INTERVALS = [1.950 + 0.005 * i for i in range(21)]  # 1.950 … 2.050 s
ROUNDS = 5  # requests per interval after the first: 105 in all


@pytest.mark.parametrize("method, keepalive", [("POST", 1), ("GET", 30)])
def test_keepalive_clients_swept_across_glances_keepalive_get_no_502(stack, tmp_path, method, keepalive):
    gw = start_gateway(tmp_path, stack, gateway_settings={"upstream_keepalive_seconds": keepalive})
    image_id = stack.create_image()
    created: list[str] = []

    def send(http: httpx.Client) -> int:
        if method == "GET":
            return http.get(f"/v2/images/{image_id}").status_code
        r = http.post("/v2/images", json={"name": "keepalive-sweep"})
        if r.status_code == 201:
            created.append(r.json()["id"])
        return r.status_code

    def client(interval: float) -> list[int]:
        with httpx.Client(base_url=gw.url, timeout=30, headers={"X-Auth-Token": stack.token("userA")}) as http:
            statuses = [send(http)]
            for _ in range(ROUNDS):
                time.sleep(interval)
                statuses.append(send(http))
            return statuses

    try:
        with ThreadPoolExecutor(len(INTERVALS)) as pool:
            statuses = Counter(s for result in pool.map(client, INTERVALS) for s in result)
        assert statuses == {200 if method == "GET" else 201: len(INTERVALS) * (ROUNDS + 1)}
        assert gw.metric("glance_gate_requests_total", code="502") == 0
    finally:
        stop(gw.proc)
        for created_id in created:
            stack.delete_image(created_id)


class ClosingUpstream:
    """An HTTP/1.1 server that answers the first request of each connection
    (keep-alive) and closes the connection, unanswered, as the second one
    arrives: the moment a keep-alive timeout meets a reused connection, made
    certain instead of swept for."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # closed
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _serve(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            head = b""
            try:
                while b"\r\n\r\n" not in head and (data := conn.recv(65536)):
                    head += data
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
                conn.recv(65536)  # the next request: closed unanswered
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()


def test_a_get_whose_reused_connection_closes_unanswered_is_sent_again(stack, tmp_path):
    upstream = ClosingUpstream()
    gw = start_gateway(tmp_path, stack, upstream=upstream.url, gateway_settings={"upstream_keepalive_seconds": 30})
    try:
        with httpx.Client(base_url=gw.url, timeout=30) as http:
            assert [http.get("/versions").status_code for _ in range(3)] == [200, 200, 200]
            r = http.post("/versions", content=b"{}")  # not safe to send twice: the 502 stays
        assert r.status_code == 502
        log = gw.log_text()
        assert log.count("retrying GET on a fresh upstream connection") == 2, log
        assert gw.metric("glance_gate_requests_total", code="502") == 1
    finally:
        stop(gw.proc)
        upstream.close()
