"""Refusals happen before the body: with Expect: 100-continue no `100 Continue`
is sent (curl sends no body byte); an allowed upload gets its `100 Continue`.
These speak raw HTTP/1.1 on a socket, to see exactly what crosses the wire.
The same refusals over plain HTTP and HTTPS, with and without Expect, are in
test_answers.py."""

from __future__ import annotations

import hashlib
import os
import subprocess

from tests.support.stack import connect, curl, put_head, read_head

MiB = 1024 * 1024


def test_expect_allowed_gets_100_continue_then_204(stack, gateway):
    image_id = stack.create_image()
    data = os.urandom(MiB)
    with connect(gateway.url) as sock:
        sock.sendall(put_head(image_id, stack.token("userA"), len(data), expect=True))
        interim = sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue"), interim
        sock.sendall(data)
        final = sock.recv(65536)
    assert final.startswith(b"HTTP/1.1 204"), final
    assert stack.image(image_id)["checksum"] == hashlib.md5(data).hexdigest()


def test_curl_gets_the_refusal_without_sending_the_body(stack, gateway, tmp_path):
    image_id = stack.create_image()
    big = tmp_path / "big.img"
    with big.open("wb") as f:
        f.truncate(256 * MiB)
    out = subprocess.run(
        [curl(), "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_upload}",
         "-X", "PUT", "-T", str(big), "-H", "Content-Type: application/octet-stream",
         "-H", "X-Auth-Token: nope", f"{gateway.url}/v2/images/{image_id}/file"],
        capture_output=True, text=True, timeout=60)
    code, uploaded = out.stdout.split()
    assert code == "401", out
    assert int(float(uploaded)) == 0, out  # curl sends Expect: 100-continue for large bodies
    stack.assert_untouched(image_id)


def test_keep_alive_connection_serves_next_request_after_upload(stack, gateway):
    """An allowed upload leaves the connection usable: the pause on reading is lifted."""
    image_id = stack.create_image()
    with connect(gateway.url) as sock:
        sock.sendall(put_head(image_id, stack.token("userA"), 5, expect=False) + b"hello")
        assert read_head(sock).startswith(b"HTTP/1.1 204")
        sock.sendall(f"GET /v2/images/{image_id} HTTP/1.1\r\nHost: g\r\n"
                     f"X-Auth-Token: {stack.token('userA')}\r\n\r\n".encode())
        assert read_head(sock).startswith(b"HTTP/1.1 200")
