"""An error inside the gateway ends the request at the gateway. For each step
of a decision, the step raises an exception no rule expects
(tests/fault_injection.py); a recording relay in front of Glance proves that
nothing of the request reached Glance, and Glance's image is untouched. The
same in trusted-auth mode, where a forged identity header must never reach
a Glance that believes it."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.support.relay import Relay
from tests.support.stack import Gateway, Stack, connect, start_gateway

MiB = 1024 * 1024
OCTET = "application/octet-stream"
FORGED = {"X-Roles": "admin", "X-Project-Id": "forged-project", "X-Identity-Status": "Confirmed"}


@pytest.fixture
def relay(stack):
    relay = Relay(int(stack.glance.rsplit(":", 1)[1]))
    relay.on()
    yield relay
    relay.off()


def faulty_gateway(tmp_path, stack: Stack, relay: Relay, fault: str, **config) -> Gateway:
    """A gateway whose upstream is the relay, projA with a quota (so limits,
    usage and the ledger are asked), and `fault` injected."""
    project = stack.user("userA")["project_id"]
    return start_gateway(tmp_path, stack, upstream=relay.url, fault=fault,
                         quota={project: stack.usage(project) + 64 * MiB}, **config)


def assert_internal(gw: Gateway, r: httpx.Response, step: str) -> None:
    assert r.status_code == 503, r.text
    assert r.json() == {"code": 503, "title": "Service Unavailable",
                        "message": "The gateway failed to check the request, so it was not forwarded."}
    assert r.headers["x-openstack-request-id"].startswith("req-")
    assert gw.metric("glance_gate_requests_total", code="503", reason="internal", source="gateway") == 1
    log = gw.log_text()
    assert "internal error in GlanceGate." in log and "Traceback" in log
    assert f"InjectedFault: injected fault in {step}" in log
    assert "Addon error" not in log  # mitmproxy never saw it


def upload_lines(relay: Relay, image_id: str) -> list[bytes]:
    return re.findall(rb"PUT /v2/images/" + image_id.encode() + rb"/(?:file|stage) HTTP", bytes(relay.sent))


@pytest.mark.parametrize("step", ["token", "image", "limits", "usage", "reserve"])
def test_a_fault_in_a_decision_step_forwards_nothing(stack, tmp_path, relay, step):
    with faulty_gateway(tmp_path, stack, relay, step) as gw:
        image_id = stack.create_image()
        r = httpx.put(f"{gw.url}/v2/images/{image_id}/file", content=b"x" * MiB, timeout=30,
                      headers={"X-Auth-Token": stack.token("userA"), "Content-Type": OCTET})
        assert_internal(gw, r, step)
        assert upload_lines(relay, image_id) == []
        stack.assert_untouched(image_id)
        record = next(r for r in gw.audit() if r["image_id"] == image_id)
        assert (record["status"], record["reason"], record["bytes_transferred"]) == (503, "internal", 0)


def chunked_upload(gw: Gateway, image_id: str, token: str, chunks: int) -> httpx.Response:
    """A chunked upload of `chunks` × 64 KiB of b"a" (so the terminating chunk
    cannot appear inside the data)."""
    return httpx.put(f"{gw.url}/v2/images/{image_id}/file", content=(b"a" * 65536 for _ in range(chunks)),
                     headers={"X-Auth-Token": token, "Content-Type": OCTET}, timeout=30)


@pytest.mark.parametrize("step, chunks", [("stream", 16), ("extend", 160)])
def test_a_fault_mid_stream_cuts_the_upload(stack, tmp_path, relay, step, chunks):
    """Raising in the stream would hand Glance a shorter, well-formed body (and
    the image would go active): the gateway cuts the upstream connection first."""
    with faulty_gateway(tmp_path, stack, relay, step, quota_settings={"chunk_bytes": MiB}) as gw:
        image_id = stack.create_image()
        r = chunked_upload(gw, image_id, stack.token("userA"), chunks)
        assert (r.status_code, r.json()["message"]) == (503, "The gateway failed to check the request, so it was not forwarded.")
        assert len(upload_lines(relay, image_id)) <= 1
        assert b"\r\n0\r\n\r\n" not in bytes(relay.sent)  # Glance never saw the body end
        stack.assert_untouched(image_id, cut=True)
        assert gw.metric("glance_gate_requests_total", code="503", reason="internal") == 1
        assert gw.metric("glance_gate_uploads_in_flight") == 0
        assert f"InjectedFault: injected fault in {step}" in gw.log_text()


@pytest.fixture
def trusted_relay(ident):
    relay = Relay(int(ident["glance_trusted_url"].rsplit(":", 1)[1]))
    relay.on()
    yield relay
    relay.off()


def test_trusted_auth_strips_forged_headers_before_anything(stack, tmp_path, trusted_relay):
    """The control: without a fault the request reaches Glance through the
    relay, with the gateway's identity and none of the forged headers."""
    with start_gateway(tmp_path, stack, upstream=trusted_relay.url, identity={"trusted_auth": True}) as gw:
        r = httpx.get(f"{gw.url}/v2/images", headers={**FORGED, "X-Auth-Token": stack.token("userA")})
        assert r.status_code == 200
        request = re.search(rb"GET /v2/images HTTP.*?\r\n\r\n", bytes(trusted_relay.sent), re.S)[0]
        assert b"forged-project" not in request and b"x-roles: admin" not in request.lower()
        assert f"X-Project-Id: {stack.user('userA')['project_id']}".encode() in request


@pytest.mark.parametrize("step, method", [("token", "GET"), ("token", "PUT"), ("image", "PUT")])
def test_trusted_auth_fault_forwards_no_forged_header(stack, tmp_path, trusted_relay, step, method):
    with start_gateway(tmp_path, stack, upstream=trusted_relay.url, identity={"trusted_auth": True}, fault=step) as gw:
        image_id = stack.create_image()
        headers = {**FORGED, "X-Auth-Token": stack.token("userA"), "Content-Type": OCTET}
        if method == "GET":
            r = httpx.get(f"{gw.url}/v2/images", headers=headers, timeout=30)
        else:
            r = httpx.put(f"{gw.url}/v2/images/{image_id}/file", content=b"x" * 1024, headers=headers, timeout=30)
        assert_internal(gw, r, step)
        sent = bytes(trusted_relay.sent)
        assert b"forged-project" not in sent
        assert b"GET /v2/images HTTP" not in sent and upload_lines(trusted_relay, image_id) == []
        stack.assert_untouched(image_id)


@pytest.mark.parametrize("value", ["²", "٣", "1_0", " 12", "+12", "12,12", "-1", "0", "3.0", ""])
def test_image_size_is_read_as_glance_reads_it(stack, tmp_path, relay, value):
    """x-openstack-image-size: Glance answers 400 where int() of the header's
    latin-1 text fails; the gateway answers the same 400 before forwarding
    (`²` is isdigit() but not int(), which once raised inside the gateway)."""
    with start_gateway(tmp_path, stack, upstream=relay.url) as gw:
        try:
            int(value.encode().decode("latin-1"))
            expected = None
        except ValueError:
            expected = 400
        image_id = stack.create_image()
        sock = connect(gw.url)
        sock.sendall(f"PUT /v2/images/{image_id}/file HTTP/1.1\r\nHost: glance\r\n"
                     f"X-Auth-Token: {stack.token('userA')}\r\nContent-Type: {OCTET}\r\n"
                     f"Content-Length: 4\r\n".encode() + b"x-openstack-image-size: " + value.encode()
                     + b"\r\n\r\ndata")
        sock.settimeout(30)
        answer = sock.recv(65536)
        sock.close()
        if expected == 400:
            assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
            assert b"Invalid or missing image size in request headers." in answer
            assert upload_lines(relay, image_id) == []
            stack.assert_untouched(image_id)
            direct = httpx.put(f"{stack.glance}/v2/images/{image_id}/file", content=b"data",
                               headers=[("X-Auth-Token", stack.token("userA")), ("Content-Type", OCTET),
                                        ("x-openstack-image-size".encode(), value.encode())])
            assert direct.status_code == 400, direct.text  # Glance itself agrees
        else:  # Glance's to answer
            assert b"Invalid or missing image size" not in answer
            assert len(upload_lines(relay, image_id)) == 1
        assert "Addon error" not in gw.log_text()
