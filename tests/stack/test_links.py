"""Through the gateway, the links Glance builds name the gateway (scheme, host
and port), never Glance's own address, whatever proxy headers the client sends."""

from __future__ import annotations

from tests.support.api import assert_links_name

FORGED = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "gopher",
          "Forwarded": "for=1.2.3.4;proto=ftp;host=evil.example", "X-Forwarded-Prefix": "/evil"}


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
