"""Faults against the real stack: a client that leaves or stalls, Glance killed,
Keystone unreachable, the gateway itself killed. In each case the client gets a
status or a clean close, no image is left `saving` where the gateway can
prevent it, nothing of the upload stays counted, and the gateway serves the
next upload."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import httpx

from tests.support.relay import Relay
from tests.support.stack import Gateway, Stack, connect, put_head, read_all, start_gateway, stop, wait_until

MiB = 1024 * 1024
DECLARED = 8 * MiB  # what each cut upload announces; the quota gateways leave exactly this much free
OCTET = "application/octet-stream"


def put(gw: Gateway, image_id: str, token: str, body: bytes) -> httpx.Response:
    return httpx.put(f"{gw.url}/v2/images/{image_id}/file", content=body, timeout=60,
                     headers={"X-Auth-Token": token, "Content-Type": OCTET})


def assert_serves(gw: Gateway, stack: Stack, user: str = "userA", size: int = MiB) -> None:
    """The gateway still works: a new upload of `size` bytes is accepted and
    stored (then deleted: other tests' quotas count what projB stores)."""
    image_id = stack.create_image(user=user)
    r = put(gw, image_id, stack.token(user), os.urandom(size))
    assert r.status_code == 204, r.text
    assert (stack.image(image_id)["status"], stack.image(image_id)["size"]) == ("active", size)
    assert gw.metric("glance_gate_uploads_in_flight") == 0
    stack.delete_image(image_id, user)


def quota_gateway(tmp: Path, stack: Stack, **config) -> Gateway:
    """A gateway leaving projB exactly DECLARED bytes: an upload whose bytes
    stayed counted after its fault would make assert_serves(…, "userB", DECLARED) a 413."""
    project = stack.user("userB")["project_id"]
    return start_gateway(tmp, stack, quota={project: stack.usage(project) + DECLARED}, **config)


def start_upload(gw: Gateway, stack: Stack, image_id: str, sent: int, user: str = "userA") -> socket.socket:
    """An upload declaring DECLARED bytes that has sent `sent` and goes silent,
    once Glance is storing it (`saving`)."""
    sock = connect(gw.url)
    sock.sendall(put_head(image_id, stack.token(user), DECLARED, expect=False) + os.urandom(sent))
    wait_until(lambda: stack.image(image_id)["status"] == "saving", "Glance never began storing the upload")
    return sock


def last_audit(gw: Gateway, image_id: str) -> dict:
    return wait_until(lambda: next((r for r in reversed(gw.audit()) if r["image_id"] == image_id), None),
                      f"no audit record for {image_id}", timeout=10)


def closed_or_reset(sock: socket.socket) -> bytes:
    """What the client reads until the connection ends: b"" for a clean close
    or a reset; a socket.timeout (the connection left open) fails the test."""
    sock.settimeout(30)
    try:
        return read_all(sock)
    except ConnectionResetError:
        return b""
    finally:
        sock.close()


# -- the client -------------------------------------------------------------------


def test_client_disconnects_mid_upload(stack, tmp_path):
    with quota_gateway(tmp_path, stack) as gw:
        image_id = stack.create_image(user="userB")
        start_upload(gw, stack, image_id, MiB, user="userB").close()
        stack.assert_untouched(image_id, cut=True)
        record = last_audit(gw, image_id)
        assert (record["status"], record["reason"], record["source"]) == (499, "client_closed", "gateway")
        assert 0 < record["bytes_transferred"] <= MiB
        assert gw.metric("glance_gate_requests_total", code="499", reason="client_closed") == 1
        assert_serves(gw, stack, "userB", DECLARED)


def test_stalled_request_head_is_closed(stack, tmp_path):
    """Slow-loris: a request head never completed is closed after
    `client_idle_timeout_seconds` (mitmproxy's default would hold it 10 minutes)."""
    with start_gateway(tmp_path, stack, client_idle_timeout=2) as gw:
        sock = connect(gw.url)
        sock.sendall(b"PUT /v2/images/" + stack.create_image().encode() + b"/file HTTP/1.1\r\nHost: glance\r\n")
        assert closed_or_reset(sock) == b""
        assert_serves(gw, stack)


def test_stalled_upload_body_is_cut(stack, tmp_path):
    """A body that stops after a few bytes is cut by the idle timeout: Glance
    sees the connection drop and puts the image back to `queued`. mitmproxy
    reports its own close like the client's, so it is recorded as 499."""
    with start_gateway(tmp_path, stack, client_idle_timeout=2) as gw:
        image_id = stack.create_image()
        sock = start_upload(gw, stack, image_id, 10)
        assert closed_or_reset(sock) == b""
        stack.assert_untouched(image_id, cut=True)
        record = last_audit(gw, image_id)
        assert (record["status"], record["reason"], record["bytes_transferred"]) == (499, "client_closed", 10)
        assert_serves(gw, stack)


# -- Glance ---------------------------------------------------------------------------


def test_glance_killed_mid_upload(stack, tmp_path, own_glance):
    """The client gets mitmproxy's 502 at once; while Glance is down every
    upload is 503; once it is back uploads pass again.

    A Glance killed with -9 cannot roll back: the image stays `saving` with
    its partial file in the store, as it would without the gateway. That is
    Glance's state to clean up (delete the image). What the gateway controls: it
    never lets a second upload into that image (409)."""
    with start_gateway(tmp_path, stack, upstream=own_glance.url) as gw:
        image_id = stack.create_image()
        sock = start_upload(gw, stack, image_id, MiB)
        own_glance.kill()
        assert closed_or_reset(sock).startswith(b"HTTP/1.1 502 ")
        record = last_audit(gw, image_id)
        assert (record["status"], record["reason"], record["source"]) == (502, "upstream_unavailable", "upstream")
        assert stack.image(image_id)["status"] == "saving"  # Glance's own, see above

        waiting = stack.create_image()
        r = put(gw, waiting, stack.token("userA"), b"data")
        assert r.status_code == 503, r.text
        assert r.json()["code"] == 503 and "glance" in r.json()["message"]
        stack.assert_untouched(waiting)

        own_glance.start()
        assert put(gw, image_id, stack.token("userA"), b"data").status_code == 409
        assert put(gw, waiting, stack.token("userA"), b"data").status_code == 204
        assert_serves(gw, stack)
        stack.delete_image(image_id)


# -- Keystone -------------------------------------------------------------------------


def test_keystone_down_then_back(stack, tmp_path):
    """Keystone unreachable: 503 with the spec's JSON error, never 401, nothing
    reaches Glance. Back: the same token passes, so the network error was
    never taken for (or cached as) an invalid token."""
    relay = Relay(int(stack.keystone.rsplit(":", 1)[1]))
    relay.on()
    gw = start_gateway(tmp_path, stack, keystone=relay.url)
    try:
        relay.off()
        image_id, token = stack.create_image(), stack.new_token("userA")
        for _ in range(2):  # the second time, a cached failure would show
            r = put(gw, image_id, token, b"data")
            assert r.status_code == 503, r.text
            assert (r.json()["code"], r.json()["title"]) == (503, "Service Unavailable")
            assert "keystone" in r.json()["message"]
            assert r.headers["x-openstack-request-id"].startswith("req-")
        stack.assert_untouched(image_id)
        relay.on()
        assert put(gw, image_id, token, b"data").status_code == 204
        assert_serves(gw, stack)
    finally:
        stop(gw.proc)
        relay.off()


# -- the gateway ----------------------------------------------------------------------


def test_gateway_killed_mid_upload_and_restarted(stack, tmp_path):
    """kill -9 of the gateway: the client sees its connection end, Glance a
    dropped connection (the image goes back to `queued`), and a gateway
    restarted on the same port serves, with nothing of the lost upload counted."""
    gw = quota_gateway(tmp_path, stack)
    port = int(gw.url.rsplit(":", 1)[1])
    image_id = stack.create_image(user="userB")
    sock = start_upload(gw, stack, image_id, MiB, user="userB")
    gw.proc.kill()
    gw.proc.wait()
    assert closed_or_reset(sock) == b""
    stack.assert_untouched(image_id, cut=True)
    with quota_gateway(tmp_path, stack, port=port) as gw:
        assert_serves(gw, stack, "userB", DECLARED)
