"""ForwardedHeaders (addons/forwarded.py): what reaches Glance of a client's
proxy headers, and that the strip runs inside the gate's fail-closed guard."""

from __future__ import annotations

import pytest
from mitmproxy.proxy import server_hooks
from mitmproxy.test import tflow

from addons.forwarded import ForwardedHeaders
from tests.support.routing import ID, Variant, through_gateway
from tests.support.addon_flows import IMAGE_ID, Answers, counted, glance_gate, run, upload


def get(headers: dict[str, str]):
    flow = upload({"x-auth-token": "tok", **headers}, path=f"/v2/images/{IMAGE_ID}")
    flow.request.method = "GET"
    return flow


def test_the_clients_proxy_headers_are_replaced_by_what_the_gateway_saw():
    flow = get({"forwarded": "for=10.0.0.1;proto=https", "x-forwarded-host": "evil.example",
                "x-forwarded-proto": "https", "x-forwarded-for": "10.0.0.1", "x-forwarded-prefix": "/x",
                "x_auth_token": "forged", "script_name": "/v1", "x-image-meta-store": "fs"})
    flow.client_conn.peername = ("192.0.2.7", 50000)
    flow.client_conn.timestamp_tls_setup = None  # plain HTTP
    ForwardedHeaders().rewrite(flow)
    headers = flow.request.headers
    assert "forwarded" not in headers and "x-forwarded-prefix" not in headers
    assert "x_auth_token" not in headers and "script_name" not in headers, "no name a WSGI server maps"
    assert headers.get_all("x-forwarded-proto") == ["http"]
    assert headers.get_all("x-forwarded-host") == ["glance"], "the client's Host, as Glance builds links"
    assert headers.get_all("x-forwarded-for") == ["192.0.2.7"]
    assert headers["x-auth-token"] == "tok" and headers["x-image-meta-store"] == "fs"


def test_without_a_host_the_address_the_client_connected_to_is_forwarded():
    flow = get({})
    del flow.request.headers["host"]
    flow.request.http_version = "HTTP/1.0"
    flow.client_conn.sockname = ("127.0.0.1", 9393)  # tflow's client connection is TLS
    ForwardedHeaders().rewrite(flow)
    assert flow.request.headers["x-forwarded-host"] == "127.0.0.1:9393"
    assert flow.request.headers["x-forwarded-proto"] == "https", "the client spoke TLS to the gateway"


def test_glances_certificate_is_checked_for_glances_name_not_the_clients_sni():
    server = tflow.tserver_conn()
    server.address, server.sni = ("glance.internal", 9292), "gateway.example"
    ForwardedHeaders().server_connect(server_hooks.ServerConnectionHookData(server, tflow.tclient_conn()))
    assert server.sni == "glance.internal"


@pytest.mark.parametrize("route", ["other", "upload"])
def test_a_strip_that_raises_ends_the_request_at_the_gateway_never_forwarded(tmp_path, monkeypatch, route):
    """The strip once ran as a sub-addon after the gate's hook, outside its
    guard: mitmproxy logged the error and forwarded the client's headers."""
    answers = Answers(monkeypatch)
    gg = glance_gate(tmp_path)

    def broken(flow):
        raise RuntimeError("strip failed")
    monkeypatch.setattr(gg.forwarded, "rewrite", broken)
    flow = get({"x-forwarded-host": "evil.example"})
    if route == "upload":
        flow = upload({"x-auth-token": "tok", "content-type": "application/octet-stream",
                       "content-length": "4", "x-forwarded-host": "evil.example"})
    before = counted(503, "internal", flow.request.method, route)

    run(lambda: gg.requestheaders(flow))

    [(status, _, body)] = answers.sent
    assert (status, body["title"]) == (503, "Service Unavailable")
    assert flow.error and flow.error.msg == "Connection killed.", "not forwarded"
    assert flow.request.stream is not True and not callable(flow.request.stream), "nothing streams upstream"
    exchange = flow.metadata["glance_gate"]
    assert (exchange.status, exchange.reason, exchange.forwarded_at) == (503, "internal", None)
    assert counted(503, "internal", flow.request.method, route) == before + 1
    assert gg.ending.in_flight == 0


@pytest.mark.parametrize("name", ["SCRIPT_NAME", "Script_Name", "PATH_INFO", "REMOTE_USER", "X_Auth_Token",
                                  "X_Identity_Status", "X_Roles", "X-Forwarded-Prefix", "X_Forwarded_Prefix",
                                  "X-Forwarded-Ssl", "X-Forwarded-Protocol", "Forwarded"])
def test_headers_a_wsgi_server_would_take_never_reach_glance(name):
    _, head = through_gateway(Variant("PUT", f"/x/v2/images/{ID}/file", ((name, "/x"),)))
    assert f"\n{name}:".lower().encode() not in head.lower(), head
