"""Links Glance builds name the gateway, never Glance's own address.

Glance makes `Location` and the version document's links from the request's
Host and scheme. So the client's Host is forwarded unchanged (mitmproxy's
reverse mode would put the upstream's there), and X-Forwarded-Proto/-Host say
what the gateway saw; Glance reads them with `[oslo_middleware]
enable_proxy_headers_parsing = true`. A client's own such headers are dropped:
they would choose the links, and the address Glance logs for the client."""

from __future__ import annotations

from mitmproxy import http
from mitmproxy.net.http import url
from mitmproxy.proxy import server_hooks

# Every header oslo_middleware's HTTPProxyToWSGI believes, and their siblings.
PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto",
                 "x-forwarded-prefix", "x-forwarded-port", "x-forwarded-server")


class ForwardedHeaders:
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        headers = flow.request.headers
        for name in PROXY_HEADERS:
            headers.pop(name, None)
        scheme = "https" if flow.client_conn.tls_established else "http"
        headers["X-Forwarded-Proto"] = scheme
        # Without a Host (HTTP/1.0), the address the client connected to.
        host = flow.request.host_header or url.hostport(scheme, *flow.client_conn.sockname[:2])
        headers["X-Forwarded-Host"] = host
        if flow.client_conn.peername:
            headers["X-Forwarded-For"] = flow.client_conn.peername[0]

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        # With the client's Host kept, mitmproxy would check Glance's certificate
        # against the name the client asked the gateway for (its SNI).
        if data.server.address:
            data.server.sni = data.server.address[0]
