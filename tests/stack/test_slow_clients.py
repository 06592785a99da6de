"""Slow clients: a request head trickled one byte at a time is closed at its
deadline, however lively; one address cannot hold more than its cap of
connections, so 2,000 trickling connections from 127.0.0.1 leave another
address's upload alone; behind a trusted proxy the cap counts the
X-Forwarded-For client."""

from __future__ import annotations

import os
import socket
import time

import httpx

from tests.support.stack import Gateway, connect, start_gateway, stop, wait_until

OCTET = "application/octet-stream"
HEAD = b"PUT /v2/images/x/file HTTP/1.1\r\nHost: glance\r\nX-Auth-Token: trickle\r\n"


def trickle_until_closed(sock: socket.socket, data: bytes, pause: float) -> int:
    """Sends one byte per pause; how many were sent before the gateway closed."""
    sock.settimeout(pause)
    for sent in range(len(data)):
        try:
            sock.sendall(data[sent:sent + 1])
            if sock.recv(1) == b"":
                return sent
        except TimeoutError:
            continue  # still open
        except (BrokenPipeError, ConnectionResetError):
            return sent
    return len(data)


def test_a_trickled_request_head_is_closed_at_its_deadline(stack, tmp_path):
    with start_gateway(tmp_path, stack, gateway_settings={"request_head_seconds": 2}) as gw:
        with connect(gw.url) as sock:
            sent = trickle_until_closed(sock, HEAD, pause=0.25)  # 4 bytes a second, never idle
        assert sent < len(HEAD)
        assert gw.metric("glance_gate_connections_refused_total", reason="head_deadline") >= 1


def upload_from(address: str, gw: Gateway, stack, image_id: str) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(transport=transport, timeout=60) as client:
        return client.put(f"{gw.url}/v2/images/{image_id}/file", content=os.urandom(1024 * 1024),
                          headers={"X-Auth-Token": stack.token("userA"), "Content-Type": OCTET})


def test_two_thousand_trickling_connections_from_one_address_leave_another_alone(stack, tmp_path):
    """The gateway may open 1,024 files (a common default): without the cap the
    trickling connections would take them all, and no other client could connect."""
    cap = 50
    gw = start_gateway(tmp_path, stack, max_fds=1024, gateway_settings={"request_head_seconds": 600,
                                                                         "max_connections_per_client": cap})
    socks: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 60  # bounded: opening them takes seconds
        while len(socks) < 2000 and time.monotonic() < deadline:
            try:
                sock = socket.create_connection(("127.0.0.1", int(gw.url.rsplit(":", 1)[1])), timeout=5,
                                                source_address=("127.0.0.1", 0))
                sock.sendall(HEAD[:10])
                socks.append(sock)
            except OSError:
                pass
        assert len(socks) == 2000
        image_id = stack.create_image()
        r = upload_from("127.0.0.2", gw, stack, image_id)
        assert r.status_code == 204, r.text
        assert stack.image(image_id)["status"] == "active"
        wait_until(lambda: gw.metric("glance_gate_connections_refused_total", reason="per_client_cap")
                   >= 2000 - cap, "the cap never refused the rest")
        stack.delete_image(image_id)
    finally:
        for sock in socks:
            sock.close()
        stop(gw.proc)


def get_on_new_connection(gw: Gateway, forwarded_for: str, token: str) -> tuple[socket.socket, bytes]:
    sock = connect(gw.url)
    sock.sendall(f"GET /versions HTTP/1.1\r\nHost: glance\r\nX-Forwarded-For: {forwarded_for}\r\n"
                 f"X-Auth-Token: {token}\r\n\r\n".encode())
    sock.settimeout(30)
    return sock, sock.recv(65536)


def test_behind_a_trusted_proxy_the_cap_counts_the_forwarded_client(stack, tmp_path):
    gw = start_gateway(tmp_path, stack, gateway_settings={"max_connections_per_client": 2,
                                                          "trusted_proxies": ["127.0.0.1"]})
    token = stack.token("userA")
    held = []
    try:
        for _ in range(2):  # two keep-alive connections of client 10.0.0.7, through the proxy
            sock, answer = get_on_new_connection(gw, "10.0.0.7", token)
            assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]
            held.append(sock)
        # a third of 10.0.0.7's, also when it puts another address in front itself
        for forwarded in ("10.0.0.7", "10.0.0.99, 10.0.0.7"):
            sock, answer = get_on_new_connection(gw, forwarded, token)
            sock.close()
            assert answer.startswith(b"HTTP/1.1 429 "), answer[:100]
            assert b"More than 2 connections from 10.0.0.7" in answer
        sock, answer = get_on_new_connection(gw, "10.0.0.8", token)  # another client behind the proxy
        held.append(sock)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]
        assert gw.metric("glance_gate_requests_total", code="429", reason="too_many_connections") == 2
    finally:
        for sock in held:
            sock.close()
        stop(gw.proc)
