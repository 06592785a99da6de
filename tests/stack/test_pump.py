"""The pump (addons/wire.py): a download's body moved between the sockets by
the gateway itself, against the real stack. Every download is checked byte for
byte, and the bytes the pump moved are read from its metric."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import ssl
import threading
import time

import httpx
import pytest

from process import supervisor
from tests.support.relay import Relay, tls_context
from tests.support.stack import connect, start_gateway, stop, tls_files, tls_settings, wait_until

MiB = 1024 * 1024
SIZE = 64 * MiB
PUMPED = "glance_gate_pumped_bytes_total"


@pytest.fixture(scope="module")
def image(stack):
    """A stored image of SIZE random bytes: its id, its data."""
    data = os.urandom(SIZE)
    image_id = stack.create_image()
    r = stack.http.put(f"{stack.glance}/v2/images/{image_id}/file", content=data,
                       headers={"X-Auth-Token": stack.token("userA"), "Content-Type": "application/octet-stream"})
    assert r.status_code == 204, r.text
    yield image_id, data
    stack.delete_image(image_id)


@pytest.fixture(scope="module")
def worker_fds(gateway):
    """The session gateway's worker's open descriptors before this module."""
    (worker,) = gateway.worker_pids()
    return worker, fds(worker)


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def get(image_id: str, token: str, method: str = "GET") -> bytes:
    return f"{method} /v2/images/{image_id}/file HTTP/1.1\r\nHost: glance\r\nX-Auth-Token: {token}\r\n\r\n".encode()


def read_response(sock: socket.socket, buffered: bytes = b"", at_least: int | None = None,
                  bodyless: bool = False) -> tuple[bytes, bytes, bytes]:
    """One response: its head; its body (Content-Length bytes, or what came
    before the connection ended; with `at_least`, what came once that much
    did); and what followed it."""
    data = buffered
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response head: {data!r}"
        data += chunk
    head, data = data.split(b"\r\n\r\n", 1)
    if bodyless:
        return head, b"", data
    length = next(int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                  if line.startswith(b"content-length:"))
    want = length if at_least is None else min(at_least, length)
    body = bytearray(data)
    while len(body) < want:
        try:
            chunk = sock.recv(4 * MiB)
        except (ConnectionResetError, ssl.SSLError):  # an abort: over TLS, no close_notify
            break
        if not chunk:
            break
        body += chunk
    if at_least is not None:
        return head, bytes(body), b""
    return head, bytes(body[:length]), bytes(body[length:])


def rest_of(sock: socket.socket) -> bytes:
    """Everything until the connection ends."""
    data = bytearray()
    try:
        while chunk := sock.recv(4 * MiB):
            data += chunk
    except (ConnectionResetError, ssl.SSLError):  # an abort: over TLS, no close_notify
        pass
    return bytes(data)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download(url: str, image_id: str, token: str, verify: ssl.SSLContext | bool = True) -> str:
    digest = hashlib.sha256()
    with httpx.stream("GET", f"{url}/v2/images/{image_id}/file", headers={"X-Auth-Token": token},
                      timeout=60, verify=verify) as r:
        assert r.status_code == 200
        for chunk in r.iter_raw(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def test_download_is_pumped_intact(stack, gateway, image, worker_fds):
    image_id, data = image
    token = stack.token("userA")
    before = gateway.metric(PUMPED)
    assert download(stack.glance, image_id, token) == sha(data)
    assert download(gateway.url, image_id, token) == sha(data)
    # mitmproxy reads the head, the first pieces, and the last 64 KiB; the pump the rest
    assert SIZE // 2 < gateway.metric(PUMPED) - before < SIZE
    # and the worker runs with glibc's malloc thresholds raised (supervisor.MALLOC_ENV)
    environ = dict(v.split(b"=", 1) for v in open(f"/proc/{worker_fds[0]}/environ", "rb").read().split(b"\0") if v)
    for key, value in supervisor.MALLOC_ENV.items():
        assert environ[key.encode()] == value.encode()


def test_keepalive_connection_serves_on_after_pumped_bodies(stack, gateway, image):
    """Two downloads, a HEAD and an API call on one connection: mitmproxy ends
    each message as if it had read the whole body itself."""
    image_id, data = image
    token = stack.token("userA")
    with connect(gateway.url) as sock:
        rest = b""
        for _ in range(2):
            sock.sendall(get(image_id, token))
            head, body, rest = read_response(sock, rest)
            assert head.startswith(b"HTTP/1.1 200 ") and b"connection: close" not in head.lower()
            assert sha(body) == sha(data)
        # Glance 33 answers HEAD of the data 405, of /versions 200 with the length of a GET's body
        for path, status in ((f"/v2/images/{image_id}/file", 405), ("/versions", 200)):
            sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: glance\r\nX-Auth-Token: {token}\r\n\r\n".encode())
            head, _, rest = read_response(sock, rest, bodyless=True)
            assert head.startswith(b"HTTP/1.1 %d " % status), head
        sock.sendall(f"GET /v2/images/{image_id} HTTP/1.1\r\nHost: glance\r\nX-Auth-Token: {token}\r\n\r\n".encode())
        head, _, rest = read_response(sock, rest)
        assert head.startswith(b"HTTP/1.1 200 ")
        # nothing of a body followed the HEADs' answers: the next answer's head is all there is
        sock.sendall(get(image_id, token))
        head, body, rest = read_response(sock, rest)
        assert head.startswith(b"HTTP/1.1 200 ") and sha(body) == sha(data) and rest == b""


def test_client_gone_mid_body_then_the_next_download(stack, gateway, image):
    image_id, data = image
    token = stack.token("userA")
    closed = gateway.metric("glance_gate_requests_total", code="499")
    with connect(gateway.url) as sock:
        sock.sendall(get(image_id, token))
        head, body, _ = read_response(sock, at_least=8 * MiB)
        assert head.startswith(b"HTTP/1.1 200 ") and len(body) >= 8 * MiB
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # reset
    wait_until(lambda: gateway.metric("glance_gate_requests_total", code="499") > closed, "no 499 counted")
    assert download(gateway.url, image_id, token) == sha(data)


def test_concurrent_downloads(stack, gateway, image):
    image_id, data = image
    token = stack.token("userA")
    before = gateway.metric(PUMPED)
    digests: list[str] = []
    threads = [threading.Thread(target=lambda: digests.append(download(gateway.url, image_id, token)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert digests == [sha(data)] * 4
    assert gateway.metric(PUMPED) - before > 4 * SIZE // 2


def test_no_descriptor_left_open(gateway, worker_fds):
    """After every download above (kept alive, cut by the client, concurrent):
    the worker holds no more descriptors than before (Glance closes its idle
    keep-alive connections within 2 s)."""
    worker, before = worker_fds
    wait_until(lambda: fds(worker) <= before, f"the worker holds {fds(worker)} descriptors, {before} before",
               timeout=20)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_glance_killed_mid_body(stack, tls, tmp_path, image, own_glance, scheme):
    """The client sees a short body and its connection end: never a complete
    one. Over HTTPS on both legs (a TLS relay in front of the Glance that is
    killed), the pump works through both sessions when it is cut."""
    image_id, data = image
    glance, upstream, settings, verify = own_glance, own_glance.url, {}, None
    with contextlib.ExitStack() as running:
        if scheme == "https":
            relay = Relay(glance.port, tls=tls_context(*tls_files(tls, "server"))).on()
            running.callback(relay.off)
            upstream, settings = relay.url, tls_settings(tls)
            verify = ssl.create_default_context(cafile=tls["ca_file"])
        gw = running.enter_context(start_gateway(tmp_path, stack, upstream=upstream, gateway_settings=settings))
        token = stack.token("userA")
        with connect(gw.url) as raw:
            sock = verify.wrap_socket(raw, server_hostname="127.0.0.1") if verify else raw
            sock.sendall(get(image_id, token))
            head, body, _ = read_response(sock, at_least=4 * MiB)  # then the client stops reading: buffers fill
            assert head.startswith(b"HTTP/1.1 200 ")
            time.sleep(1)
            glance.kill()
            sock.settimeout(30)
            body += rest_of(sock)
        assert len(body) < SIZE
        assert body == data[:len(body)]
        assert gw.metric(PUMPED) > 0  # counted once the pump ended: it was cut mid-body
        glance.start()
        assert download(gw.url, image_id, token, verify or True) == sha(data)


class Trickle(Relay):
    """Glance's answers trickle: 8 KiB every 0.3 s, so the pump's low-water
    mark (64 KiB) takes longer to reach than the idle timeout."""

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        if record:
            return super()._pump(src, dst, record)
        try:
            while data := src.recv(8192):
                time.sleep(0.3)
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def test_trickling_upstream_outlasts_the_idle_timeout(stack, tmp_path):
    """A 320 KiB answer that takes ~12 s to trickle through a 1 s idle timeout:
    every byte Glance sends counts as activity, so it arrives whole."""
    data = os.urandom(320 * 1024)
    image_id = stack.create_image()
    token = stack.token("userA")
    r = stack.http.put(f"{stack.glance}/v2/images/{image_id}/file", content=data,
                       headers={"X-Auth-Token": token, "Content-Type": "application/octet-stream"})
    assert r.status_code == 204, r.text
    relay = Trickle(int(stack.glance.rsplit(":", 1)[1]))
    relay.on()
    gw = start_gateway(tmp_path, stack, upstream=relay.url, client_idle_timeout=1)
    try:
        started = time.monotonic()
        assert download(gw.url, image_id, token) == sha(data)
        assert time.monotonic() - started > 5  # it did trickle, past the idle timeout
        assert gw.metric(PUMPED) > 0
    finally:
        stop(gw.proc)
        relay.off()
        stack.delete_image(image_id)


def test_sigterm_drain_finishes_or_cuts_pumped_downloads(stack, tmp_path, image):
    """A download read at once finishes during the drain; one its client stopped
    reading is cut when drain_seconds are over: a short body, then EOF."""
    image_id, data = image
    token = stack.token("userA")
    with start_gateway(tmp_path, stack, gateway_settings={"drain_seconds": 3}) as gw:
        assert download(gw.url, image_id, token) == sha(data)
        assert gw.metric(PUMPED) > 0  # this gateway pumps
        with connect(gw.url) as fast, connect(gw.url) as stalled:
            for sock in (fast, stalled):
                sock.sendall(get(image_id, token))
            _, stalled_body, _ = read_response(stalled, at_least=MiB)  # then it stops reading
            fast_head = b""
            while b"\r\n\r\n" not in fast_head:
                fast_head += fast.recv(65536)
            time.sleep(1)  # the pumps run: the stalled one blocked on its client's full socket
            os.kill(gw.proc.pid, signal.SIGTERM)
            sigterm = time.monotonic()
            _, body, _ = read_response(fast, fast_head)
            assert sha(body) == sha(data)
            time.sleep(max(0.0, sigterm + 3 + 1 - time.monotonic()))  # past drain_seconds: cut by now
            stalled.settimeout(30)
            stalled_body += rest_of(stalled)
            assert len(stalled_body) < SIZE and stalled_body == data[:len(stalled_body)]
            assert time.monotonic() - sigterm < 3 + 8  # cut by the drain, not the supervisor's kill
        assert gw.proc.wait(30) == 0


@pytest.mark.parametrize("legs", ["client", "upstream", "both"])
def test_pumped_over_tls_legs_intact(stack, tls, tmp_path, image, legs):
    """HTTPS to the client, to Glance, or both: the pump moves the body through
    each leg's own TLS session; two downloads on one keep-alive connection
    arrive intact, and the gateway counts them pumped."""
    image_id, data = image
    settings, upstream = {}, None
    if legs in ("client", "both"):
        tls_dir = os.path.join(tls["tls_dir"], "server")
        settings.update(tls_cert_file=f"{tls_dir}.pem", tls_key_file=f"{tls_dir}.key")
    if legs in ("upstream", "both"):
        upstream = tls["glance_tls_url"]
        settings.update(upstream_ca_file=tls["ca_file"])
    gw = start_gateway(tmp_path, stack, upstream=upstream, gateway_settings=settings)
    try:
        verify = ssl.create_default_context(cafile=tls["ca_file"])
        with httpx.Client(base_url=gw.url, verify=verify, timeout=120) as client:
            for _ in range(2):
                r = client.get(f"/v2/images/{image_id}/file", headers={"X-Auth-Token": stack.token("userA")})
                assert r.status_code == 200
                assert sha(r.content) == sha(data)
        assert gw.metric(PUMPED) >= 0.9 * 2 * len(data)  # all but where each body began and ended
    finally:
        stop(gw.proc)
