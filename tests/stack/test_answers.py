"""Every answer the gateway writes itself (refusals before the body, cuts
mid-stream, fail-closed 503s), over plain HTTP and over HTTPS: one set of
cases, parametrised by the listener, so neither can drift from the other.
Each checks the status and JSON body the client read, and the image at
Glance. Over HTTPS these answers bypass mitmproxy's layers (addons/wire.py
`_answer`): a plaintext answer there reaches the client as TLS garbage."""

from __future__ import annotations

import json
import os
import select
import socket
import ssl
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.api import assert_refusal, put
from tests.support.stack import (QUOTA_B, Gateway, Stack, free_port, put_head, read_all, start_gateway, stop,
                                 tls_files, tls_settings)
from tests.support.relay import Relay, tls_context

MiB = 1024 * 1024


@dataclass
class Front:
    """The gateway's listener under test, plain or TLS, and how to reach it."""
    scheme: str
    gateway: Gateway
    tls: dict

    @property
    def verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=self.tls["ca_file"]) if self.scheme == "https" else False

    def glance_log(self, stack: Stack) -> Path:
        """The log of the Glance behind `gateway`: over HTTPS, the cloud's HTTPS Glance."""
        log = Path(stack.cloud["logs"]["glance"])
        return log.with_name("glance-tls.log") if self.scheme == "https" else log

    def client(self, gw: Gateway | None = None) -> httpx.Client:
        return httpx.Client(base_url=(gw or self.gateway).url, verify=self.verify, timeout=60)

    def connect(self, gw: Gateway | None = None) -> socket.socket:
        parts = urlsplit((gw or self.gateway).url)
        sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        return self.verify.wrap_socket(sock, server_hostname=parts.hostname) if self.scheme == "https" else sock

    def start(self, tmp: Path, stack: Stack, **config) -> Gateway:
        """Another gateway with this listener (plain, or the test CA's certificate)."""
        if self.scheme == "https":
            config["gateway_settings"] = {**tls_settings(self.tls, upstream_ca=False),
                                          **config.get("gateway_settings", {})}
        return start_gateway(tmp, stack, **config)


@pytest.fixture(params=["http", "https"])
def front(request, tls) -> Front:
    return Front(request.param, request.getfixturevalue("gateway" if request.param == "http" else "tls_gateway"), tls)


@pytest.fixture
def client(front):
    with front.client() as c:
        yield c


@pytest.fixture
def gateways(tmp_path):
    made: list[Gateway] = []
    yield made
    for gw in made:
        stop(gw.proc)


# ------------------------------------------------ refusals before the body ----

def test_400_bad_id(stack, client):
    assert_refusal(put(client, "not-a-uuid", stack.token("userA")), 400, "uuid")


def test_401_token(stack, front, client):
    image_id = stack.create_image()
    r = put(client, image_id, "garbage-token")
    assert_refusal(r, 401, "authentication")
    keystone = stack.keystone if front.scheme == "http" else front.tls["keystone_tls_url"]
    assert r.headers["www-authenticate"] == f'Keystone uri="{keystone}"'
    stack.assert_untouched(image_id)


def test_415_content_type(stack, client):
    image_id = stack.create_image()
    assert_refusal(put(client, image_id, stack.token("userA"), headers={"Content-Type": "text/plain"}),
                   415, "content-type")
    stack.assert_untouched(image_id)


def test_400_image_size_header(stack, client):
    image_id = stack.create_image()
    assert_refusal(put(client, image_id, stack.token("userA"), headers={"x-openstack-image-size": "1.0"}),
                   400, "image size")
    stack.assert_untouched(image_id)


def test_500_empty_body(stack, client):
    image_id = stack.create_image()
    assert_refusal(put(client, image_id, stack.token("userA"), b""), 500, "empty")
    stack.assert_untouched(image_id)


def test_404_not_found(stack, client):
    image_id = stack.create_image()  # userA's, private
    assert_refusal(put(client, str(uuid.uuid4()), stack.token("userA")), 404, "no image")
    assert_refusal(put(client, image_id, stack.token("userB")), 404, "no image")
    stack.assert_untouched(image_id)


def test_403_not_owner(stack, client):
    image_id = stack.create_image(visibility="shared")
    r = stack.http.post(f"{stack.glance}/v2/images/{image_id}/members",
                        json={"member": stack.user("userB")["project_id"]},
                        headers={"X-Auth-Token": stack.token("userA")})
    assert r.status_code == 200, r.text
    assert_refusal(put(client, image_id, stack.token("userB")), 403, "owner")
    stack.assert_untouched(image_id)


def test_400_formats(stack, client):
    image_id = stack.create_image(formats=False)
    assert_refusal(put(client, image_id, stack.token("userA")), 400, "disk_format")
    stack.assert_untouched(image_id)


def test_409_status(stack, client):
    image_id = stack.create_image()
    token = stack.token("userA")
    assert put(client, image_id, token, b"first").status_code == 204
    assert_refusal(put(client, image_id, token, b"second upload"), 409, "queued")
    assert (stack.image(image_id)["status"], stack.image(image_id)["size"]) == ("active", 5)


def test_413_declared_size_over_quota(stack, client):
    image_id = stack.create_image(user="userB")
    assert_refusal(put(client, image_id, stack.token("userB"), b"x" * (QUOTA_B + 1)), 413, "quota")
    stack.assert_untouched(image_id)


def test_400_ambiguous(stack, client):
    """A path Glance and a lenient WSGI stack could route apart (a trailing
    slash): refused, not guessed."""
    image_id = stack.create_image()
    r = client.put(f"/v2/images/{image_id}/file/", content=b"x" * 1024,
                   headers={"Content-Type": "application/octet-stream", "X-Auth-Token": stack.token("userA")})
    assert_refusal(r, 400, "other than the gateway reads it")
    stack.assert_untouched(image_id)


def test_413_image_count(stack, front, gateways, tmp_path, projQ):
    """projQ owns one image of max_images = 1: the create is refused, none made."""
    stack.create_image(user="userQ")
    gateways.append(gw := front.start(tmp_path, stack, quota_settings={"max_images": 1}))
    with front.client(gw) as c:
        r = c.post("/v2/images", json={"name": "one-too-many", "disk_format": "raw", "container_format": "bare"},
                   headers={"X-Auth-Token": stack.token("userQ")})
    assert_refusal(r, 413, "image_count_total")
    images = stack.http.get(f"{stack.glance}/v2/images", params={"owner": projQ},
                            headers={"X-Auth-Token": stack.token("admin")}).json()["images"]
    assert len(images) == 1, images


def test_413_staging(stack, front, gateways, tmp_path, projQ):
    """2 MiB staged into stage_bytes = 1 MiB: refused before the body, nothing staged."""
    image_id = stack.create_image(user="userQ")
    gateways.append(gw := front.start(tmp_path, stack, quota_settings={"stage_bytes": MiB}))
    with front.client(gw) as c:
        assert_refusal(put(c, image_id, stack.token("userQ"), os.urandom(2 * MiB), route="stage"),
                       413, "image_stage_total")
    stack.assert_untouched(image_id)
    assert stack.glance_usage(projQ)[projQ][1] == 0


# ------------------------------------------------------ cuts mid-stream ----

def test_413_chunked_upload_cut_at_the_quota(stack, front, client):
    image_id = stack.create_image(user="userB")
    chunks = (os.urandom(256 * 1024) for _ in range(QUOTA_B // (256 * 1024) + 4))
    assert_refusal(put(client, image_id, stack.token("userB"), chunks), 413, "quota")
    stack.glance_took_up(image_id, 1, front.glance_log(stack))
    stack.assert_untouched(image_id, cut=True)


def test_500_empty_chunked_body(stack, client):
    image_id = stack.create_image()
    assert_refusal(put(client, image_id, stack.token("userA"), iter([])), 500, "empty")
    stack.assert_untouched(image_id, cut=True)


# ------------------------------------------------------- slow-client bounds ----

def test_429_too_many_connections_behind_a_trusted_proxy(stack, front, gateways, tmp_path):
    gateways.append(gw := front.start(tmp_path, stack, gateway_settings={"max_connections_per_client": 1,
                                                                         "trusted_proxies": ["127.0.0.1"]}))
    token = stack.token("userA")
    with front.client(gw) as first, front.client(gw) as second:
        assert first.get("/versions", headers={"X-Forwarded-For": "10.0.0.7", "X-Auth-Token": token}).status_code == 200
        r = second.get("/versions", headers={"X-Forwarded-For": "10.0.0.7", "X-Auth-Token": token})
        assert_refusal(r, 429, "more than 1 connections from 10.0.0.7")


# ------------------------------------------------------------ fail closed ----

@pytest.mark.parametrize("fault", ["image", "stream"])
def test_503_internal(stack, front, gateways, tmp_path, fault):
    """An unexpected error inside the gateway, before the body (`image`) and
    mid-stream (`stream`): 503 `internal`, nothing of the upload stored."""
    project = stack.user("userA")["project_id"]  # with a quota, so the stream is checked
    gateways.append(gw := front.start(tmp_path, stack, fault=fault, quota={project: stack.usage(project) + 64 * MiB}))
    image_id = stack.create_image()
    body = iter([os.urandom(64 * 1024)] * 8) if fault == "stream" else b"x" * 1024
    with front.client(gw) as c:
        assert_refusal(put(c, image_id, stack.token("userA"), body), 503, "failed to check")
    stack.assert_untouched(image_id, cut=fault == "stream")


def test_503_keystone_down(stack, front, gateways, tmp_path):
    gateways.append(gw := front.start(tmp_path, stack, keystone=f"http://127.0.0.1:{free_port()}"))
    image_id = stack.create_image()
    with front.client(gw) as c:
        assert_refusal(put(c, image_id, stack.token("userA")), 503, "keystone")
    stack.assert_untouched(image_id)


def test_503_glance_certificate_from_another_ca(stack, front, gateways, tmp_path):
    relay = Relay(urlsplit(stack.glance).port, tls=tls_context(*tls_files(front.tls, "other"))).on()
    try:
        gateways.append(gw := front.start(tmp_path, stack, upstream=relay.url,
                                          gateway_settings={"upstream_ca_file": front.tls["ca_file"]}))
        image_id = stack.create_image()
        with front.client(gw) as c:
            assert_refusal(put(c, image_id, stack.token("userA")), 503, "glance")
    finally:
        relay.off()
    assert relay.forwarded == 0
    stack.assert_untouched(image_id)


# ------------------------------------------------------ early rejection ----

def test_expect_refusal_sends_no_100_continue_and_closes(stack, front):
    image_id = stack.create_image()
    with front.connect() as sock:
        sock.sendall(put_head(image_id, "bad-token", 1024**3, expect=True))
        reply = read_all(sock)  # returns only because the gateway closed
    assert reply.startswith(b"HTTP/1.1 401 "), reply
    assert b"100 Continue" not in reply
    assert b"connection: close" in reply.lower()
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["code"] == 401
    stack.assert_untouched(image_id)


def test_refusal_arrives_before_a_64_mib_body_is_sent(stack, front):
    """Without Expect, a client pushing its body anyway has its 413 to read
    long before the body is sent; then the connection ends cleanly (FIN, and
    close_notify over TLS), once the client stops sending."""
    image_id = stack.create_image(user="userB")
    total, sent, chunk = 64 * MiB, 0, b"\0" * (256 * 1024)
    with front.connect() as sock:
        sock.sendall(put_head(image_id, stack.token("userB"), total, expect=False))
        while sent < total and not select.select([sock], [], [], 0)[0]:
            sock.sendall(chunk)
            sent += len(chunk)
        reply = read_all(sock)
    assert sent < total, "no answer while the whole body of a refused upload was sent"
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["code"] == 413
    stack.assert_untouched(image_id)


# ------------------------------------------------------- a real client ----

def test_openstack_cli_reads_the_quota_refusal(stack, front, openstack_cli, tmp_path):
    """`openstack image create --file` over quota says why, not an SSL error."""
    image = tmp_path / "big.img"
    image.write_bytes(os.urandom(QUOTA_B + MiB))
    env = {**os.environ, **stack.openrc("userB")}
    if front.scheme == "https":
        env.update(OS_AUTH_URL=front.tls["keystone_tls_url"] + "/v3", OS_REGION_NAME=front.tls["region"],
                   OS_CACERT=front.tls["ca_file"])
    name = f"cli-over-quota-{front.scheme}-{uuid.uuid4().hex[:8]}"
    project = stack.user("userB")["project_id"]
    before = stack.usage(project)
    out = subprocess.run([openstack_cli, "image", "create", "--file", str(image), "--disk-format", "raw",
                          "--container-format", "bare", name], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode != 0
    assert "413" in out.stderr and "quota" in out.stderr.lower(), out.stderr
    assert "SSL" not in out.stderr, out.stderr
    # The CLI deletes the image it created when the upload fails; none holds data.
    images = stack.http.get(f"{stack.glance}/v2/images?name={name}",
                            headers={"X-Auth-Token": stack.token("userB")}).json()["images"]
    assert all((i["status"], i["size"]) == ("queued", None) for i in images), images
    assert stack.usage(project) == before
