"""Through the gateway, the links Glance builds name the gateway (scheme, host
and port), never Glance's own address, whatever proxy headers the client sends."""

from __future__ import annotations

import httpx

from tests.support.stack import Stack

FORGED = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "gopher",
          "Forwarded": "for=1.2.3.4;proto=ftp;host=evil.example", "X-Forwarded-Prefix": "/evil"}


def assert_links_name(client: httpx.Client, stack: Stack, base: str, headers: dict | None = None) -> None:
    """POST /v2/images's Location and the version documents' links start with base."""
    token = stack.token("userA")
    r = client.post("/v2/images", json={"name": "links", "disk_format": "raw", "container_format": "bare"},
                    headers={"X-Auth-Token": token, **(headers or {})})
    assert r.status_code == 201, r.text
    image_id = r.json()["id"]
    try:
        assert r.headers["location"] == f"{base}/v2/images/{image_id}"
    finally:
        stack.delete_image(image_id)
    for path, status in (("/versions", 200), ("/", 300)):
        r = client.get(path, headers=headers or {})
        assert r.status_code == status, r.text
        hrefs = [link["href"] for version in r.json()["versions"] for link in version["links"]]
        assert hrefs and all(href.startswith(f"{base}/v2") for href in hrefs), hrefs


def test_links_name_the_gateway(stack, gateway, gw_http):
    assert_links_name(gw_http, stack, gateway.url)


def test_forged_proxy_headers_do_not_move_the_links(stack, gateway, gw_http):
    assert_links_name(gw_http, stack, gateway.url, FORGED)


def test_the_clients_host_is_kept(stack, gateway, gw_http):
    """The name the client used for the gateway, e.g. its DNS name and port."""
    port = gateway.url.rsplit(":", 1)[1]
    r = gw_http.get("/versions", headers={"Host": f"images.example:{port}"})
    assert r.json()["versions"][0]["links"][0]["href"].startswith(f"http://images.example:{port}/v2")


def test_glance_direct_names_itself(stack):
    """The cloud's Glance builds links from the request, not a fixed public_endpoint."""
    r = stack.http.get(f"{stack.glance}/versions")
    assert r.json()["versions"][0]["links"][0]["href"].startswith(f"{stack.glance}/v2")
