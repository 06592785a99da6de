"""TLS on every hop, against the cloud's HTTPS Keystone and Glance
(CLOUD_TLS=1: gunicorn serving certificates of a test CA made at run time).

Bad certificates are served by a TLS Relay in front of the real (plain)
Glance or Keystone: were the gateway not to verify, the request would reach
them and pass. Each bad case is run beside the same relay with a good
certificate, which does pass."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.stack import read_all, start_gateway, stop, tls_files as files, tls_settings, wait_until
from tests.support.api import assert_links_name
from tests.support.relay import Relay, tls_context
from tests.support.tokens import Provider

MiB = 1024 * 1024
OCTET = {"Content-Type": "application/octet-stream"}


@pytest.fixture
def https(tls, tls_gateway):
    with httpx.Client(base_url=tls_gateway.url, verify=ssl.create_default_context(cafile=tls["ca_file"]), timeout=60) as client:
        yield client


def upload(client: httpx.Client, stack, image_id: str, data: bytes) -> httpx.Response:
    return client.put(f"/v2/images/{image_id}/file", content=data,
                      headers={"X-Auth-Token": stack.token("userA"), **OCTET})


def test_every_hop_is_https(stack, tls, tls_gateway, https):
    """client → gateway → Glance, gateway → Keystone: all HTTPS, verified."""
    r = https.post("/v2/images", json={"name": "tls", "disk_format": "raw", "container_format": "bare"},
                   headers={"X-Auth-Token": stack.token("userA")})
    assert r.status_code == 201, r.text
    image_id = r.json()["id"]
    data = os.urandom(3 * MiB)
    r = upload(https, stack, image_id, data)
    assert r.status_code == 204, r.text
    assert r.http_version == "HTTP/1.1"
    image = stack.image(image_id)
    assert (image["status"], image["size"]) == ("active", len(data))
    r = https.get(f"/v2/images/{image_id}/file", headers={"X-Auth-Token": stack.token("userA")})
    assert r.content == data
    # The probes reach both over the same verified TLS.
    for dependency in ("keystone", "glance"):
        wait_until(lambda: tls_gateway.metric("glance_gate_dependency_up", dependency=dependency) == 1,
                   f"{dependency} probed up over TLS")


def test_links_name_the_https_gateway(stack, tls_gateway, https):
    assert_links_name(https, stack, tls_gateway.url)


def test_openstack_cli_through_the_https_catalog(stack, tls, tls_gateway, openstack_cli, tmp_path):
    """RegionTLS's catalog names the HTTPS Keystone and the HTTPS gateway."""
    image = tmp_path / "tls.img"
    image.write_bytes(os.urandom(2 * MiB))
    env = {**os.environ, **stack.openrc("userA"), "OS_AUTH_URL": tls["keystone_tls_url"] + "/v3",
           "OS_REGION_NAME": tls["region"]}
    out = subprocess.run(
        [openstack_cli, "--os-cacert", tls["ca_file"], "image", "create", "--file", str(image),
         "--disk-format", "raw", "--container-format", "bare", "-f", "json", "cli-tls-upload"],
        capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    image_id = json.loads(out.stdout)["id"]
    assert (stack.image(image_id)["status"], stack.image(image_id)["size"]) == ("active", 2 * MiB)
    assert [r["status"] for r in tls_gateway.audit() if r["image_id"] == image_id] == [204]


def tls_connect(tls: dict, url: str, alpn: list[str] | None = None, **context) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=tls["ca_file"])
    for key, value in context.items():
        setattr(ctx, key, value)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    parts = urlsplit(url)
    return ctx.wrap_socket(socket.create_connection((parts.hostname, parts.port), timeout=10),
                           server_hostname=parts.hostname)


def test_h2_is_never_negotiated(tls, tls_gateway):
    with tls_connect(tls, tls_gateway.url, ["h2", "http/1.1"]) as s:
        assert s.selected_alpn_protocol() == "http/1.1"
    with tls_connect(tls, tls_gateway.url, ["h2"]) as s:
        assert s.selected_alpn_protocol() is None  # no ALPN: the client must speak HTTP/1.1
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        assert not read_all(s).startswith(b"\x00")  # no HTTP/2 frame back, the connection is closed
    out = subprocess.run(["curl", "-sS", "--http2", "--cacert", tls["ca_file"], "-o", "/dev/null",
                          "-w", "%{http_version}", f"{tls_gateway.url}/versions"], capture_output=True, text=True)
    assert out.stdout == "1.1", out.stderr


def test_tls_below_1_2_is_refused(tls, tls_gateway):
    with pytest.raises(ssl.SSLError):
        tls_connect(tls, tls_gateway.url, maximum_version=ssl.TLSVersion.TLSv1_1,
                    minimum_version=ssl.TLSVersion.TLSv1).close()


def test_plaintext_to_the_tls_port_is_refused(stack, tls_gateway):
    image_id = stack.create_image()
    port = urlsplit(tls_gateway.url).port
    for request in (b"GET /versions HTTP/1.1\r\nHost: g\r\n\r\n",
                    (f"PUT /v2/images/{image_id}/file HTTP/1.1\r\nHost: g\r\nX-Auth-Token: {stack.token('userA')}\r\n"
                     "Content-Type: application/octet-stream\r\nContent-Length: 1024\r\n\r\n").encode() + b"x" * 1024):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(request)
            answer = read_all(s)  # and then closed
        assert answer.startswith(b"HTTP/1.1 400 "), answer
        assert b"This port serves HTTPS only." in answer
    stack.assert_untouched(image_id)


def test_a_gateway_without_a_certificate_fails_a_tls_handshake(tls, gateway):
    """mitmproxy would answer with a certificate of its own CA."""
    with pytest.raises((ssl.SSLError, ConnectionError)):
        tls_connect(tls, gateway.url.replace("http:", "https:"), check_hostname=False,
                    verify_mode=ssl.CERT_NONE).close()


# -------------------------------------------------- verification failures ----

BAD = ["other", "expired", "wrong-name"]


@pytest.fixture
def relays(tls):
    made: list[Relay] = []

    def relay(target: str, cert: str, client_ca: Path | None = None) -> Relay:
        made.append(Relay(urlsplit(target).port, tls=tls_context(*files(tls, cert), client_ca)).on())
        return made[-1]

    yield relay
    for r in made:
        r.off()


@pytest.fixture
def gateways(stack, tmp_path):
    made = []

    def gateway(**config):
        made.append(start_gateway(tmp_path, stack, **config))
        return made[-1]

    yield gateway
    for gw in made:
        stop(gw.proc)


def try_upload(stack, gw, tls) -> httpx.Response:
    image_id = stack.create_image()
    with httpx.Client(base_url=gw.url, verify=ssl.create_default_context(cafile=tls["ca_file"]), timeout=30) as client:
        r = upload(client, stack, image_id, os.urandom(64 * 1024))
    if r.status_code != 204:
        stack.assert_untouched(image_id)
    return r


@pytest.mark.parametrize("cert", ["server", *BAD])
def test_glances_certificate_is_verified(stack, tls, relays, gateways, cert):
    """Another CA's, an expired or a wrong-name certificate: 503 for an upload
    (the gateway's own lookup) and 502 for anything else (mitmproxy's
    connection), and not one request reaches Glance."""
    relay = relays(stack.glance, cert)
    gw = gateways(upstream=relay.url, gateway_settings={"upstream_ca_file": tls["ca_file"]})
    r = try_upload(stack, gw, tls)
    passthrough = httpx.get(f"{gw.url}/v2/images", headers={"X-Auth-Token": stack.token("userA")}, timeout=30)
    if cert == "server":
        assert (r.status_code, passthrough.status_code, relay.refused) == (204, 200, [])
        return
    assert r.status_code == 503, r.text
    assert "glance" in r.json()["message"] and "CERTIFICATE_VERIFY_FAILED" in r.json()["message"]
    assert passthrough.status_code == 502, passthrough.text
    assert relay.forwarded == 0 and relay.refused
    assert gw.metric("glance_gate_dependency_up", dependency="glance") == 0


def test_the_client_cannot_choose_the_name_glance_is_checked_against(stack, tls, relays, gateways):
    """The client's Host is kept for Glance's links, but Glance's certificate
    is checked against the upstream's name, never the client's SNI: asking
    the gateway for `glance.invalid` must not make a certificate for that name
    pass for Glance at 127.0.0.1."""
    relay = relays(stack.glance, "wrong-name")
    gw = gateways(upstream=relay.url, gateway_settings=tls_settings(tls))
    ctx = ssl.create_default_context(cafile=tls["ca_file"])
    ctx.check_hostname = False  # the gateway's certificate does not name glance.invalid
    port = urlsplit(gw.url).port
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                         server_hostname="glance.invalid") as s:
        s.sendall(b"GET /versions HTTP/1.1\r\nHost: glance.invalid\r\nConnection: close\r\n\r\n")
        answer = read_all(s)
    assert answer.startswith(b"HTTP/1.1 502 "), answer[:200]
    assert relay.forwarded == 0


@pytest.mark.parametrize("cert", ["server", *BAD])
def test_keystones_certificate_is_verified(stack, tls, relays, gateways, cert):
    relay = relays(stack.keystone, cert)
    gw = gateways(keystone=relay.url, keystone_settings={"ca_file": tls["ca_file"]})
    r = try_upload(stack, gw, tls)
    if cert == "server":
        assert (r.status_code, relay.refused) == (204, [])
        return
    assert r.status_code == 503, r.text
    assert "keystone" in r.json()["message"] and "CERTIFICATE_VERIFY_FAILED" in r.json()["message"]
    assert relay.forwarded == 0 and relay.refused


@pytest.mark.parametrize("cert, ca, status", [("server", True, 204), ("other", True, 503), ("server", False, 503)])
def test_the_jwks_url_is_verified_with_keystones_ca_file(stack, ident, tls, relays, gateways, cert, ca, status):
    """identity.mode = "jwt": the identity provider's keys, fetched over HTTPS,
    verified against keystone.ca_file (else the system store)."""
    provider = Provider()
    try:
        relay = relays(provider.url, cert)
        gw = gateways(upstream=ident["glance_trusted_url"], keystone_settings={"ca_file": tls["ca_file"]} if ca else {},
                      identity={"mode": "jwt", "trusted_auth": True, "jwks_url": f"{relay.url}/jwks",
                                "issuer": provider.issuer, "audience": provider.audience})
        image_id = stack.create_image()
        r = httpx.put(f"{gw.url}/v2/images/{image_id}/file", content=b"x" * 1024, timeout=30,
                      headers={"X-Auth-Token": provider.token(stack.user("userA")), **OCTET})
        assert r.status_code == status, r.text
        if status == 503:
            assert "jwks" in r.json()["message"] and "CERTIFICATE_VERIFY_FAILED" in r.json()["message"]
            assert relay.forwarded == 0
            stack.assert_untouched(image_id)
    finally:
        provider.close()


def test_without_a_ca_file_the_system_store_decides(stack, tls, gateways):
    """The test CA is in no system store: both refuse, as with another CA."""
    glance = gateways(upstream=tls["glance_tls_url"])
    assert try_upload(stack, glance, tls).status_code == 503
    assert httpx.get(f"{glance.url}/versions", timeout=30).status_code == 502
    keystone = gateways(keystone=tls["keystone_tls_url"])
    assert try_upload(stack, keystone, tls).status_code == 503


def test_mutual_tls_to_glance(stack, tls, relays, gateways):
    """A Glance that asks for a client certificate gets the configured one, on
    the gateway's own calls and on mitmproxy's connection alike."""
    relay = relays(stack.glance, "server", client_ca=Path(tls["ca_file"]))
    pem, key = files(tls, "client")
    with_cert = gateways(upstream=relay.url, gateway_settings={
        "upstream_ca_file": tls["ca_file"], "upstream_client_cert_file": str(pem), "upstream_client_key_file": str(key)})
    assert try_upload(stack, with_cert, tls).status_code == 204
    assert httpx.get(f"{with_cert.url}/v2/images", headers={"X-Auth-Token": stack.token("userA")},
                     timeout=30).status_code == 200
    stop(with_cert.proc)  # its probes would connect meanwhile
    forwarded = relay.forwarded
    without = gateways(upstream=relay.url, gateway_settings={"upstream_ca_file": tls["ca_file"]})
    assert try_upload(stack, without, tls).status_code == 503
    # With TLS 1.3 the refusal of a missing client certificate is an alert after
    # the handshake: when it comes after mitmproxy has sent the request, mitmproxy
    # logs a TLS error and answers nothing (the client waits for the idle timeout).
    try:
        assert httpx.get(f"{without.url}/versions", timeout=5).status_code == 502
    except httpx.ReadTimeout:
        pass
    assert relay.forwarded == forwarded and len(relay.refused) >= 2  # neither call got through


# ------------------------------------------------------------------ reload ----

def served_certificate(tls: dict, url: str) -> bytes:
    with tls_connect(tls, url, check_hostname=False) as s:
        return s.getpeercert(binary_form=True)


def leaf(pem: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.read_text().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n")


def test_sighup_reloads_the_certificate(stack, tls, gateways, tmp_path):
    cert, key = tmp_path / "gw.pem", tmp_path / "gw.key"
    for name, dest in zip(files(tls, "server"), (cert, key)):
        shutil.copy(name, dest)
    gw = gateways(gateway_settings={"tls_cert_file": str(cert), "tls_key_file": str(key)})
    assert served_certificate(tls, gw.url) == leaf(files(tls, "server")[0])
    # renewed: another certificate of the same CA
    for name, dest in zip(files(tls, "client"), (cert, key)):
        shutil.copy(name, dest)
    gw.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: served_certificate(tls, gw.url) == leaf(files(tls, "client")[0]), "the new certificate served")
    wait_until(lambda: "reloaded: config generation 2" in gw.log_text(), "the reload over")  # else the next is ignored
    # a key that does not fit: the old certificate stays, the gateway serves on
    shutil.copy(files(tls, "other")[1], key)
    gw.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload refused, the running config stays: gateway.tls_cert_file" in gw.log_text(),
               "the failed reload logged")
    assert served_certificate(tls, gw.url) == leaf(files(tls, "client")[0])
    assert gw.proc.poll() is None
