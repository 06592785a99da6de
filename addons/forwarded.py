"""Links Glance builds name the gateway, never Glance's own address.

Glance makes `Location` and the version document's links from the request's
Host and scheme. So the client's Host is forwarded unchanged (mitmproxy's
reverse mode would put the upstream's there), and X-Forwarded-Proto/-Host say
what the gateway saw; Glance reads them with `[oslo_middleware]
enable_proxy_headers_parsing = true`. A client's own such headers are dropped:
they would choose the links, and the address Glance logs for the client.

Nor does any header with `_` in its name reach Glance: a WSGI server maps it
onto the environ variable of another header (`X_Auth_Token` onto
HTTP_X_AUTH_TOKEN, beside or instead of the real one), or takes it for its own
variable from a proxy it trusts, as gunicorn trusts 127.0.0.1 by default
(`SCRIPT_NAME` moves the path Glance routes away from the one the gateway
classified)."""

from __future__ import annotations

from mitmproxy import http
from mitmproxy.net.http import url
from mitmproxy.proxy import server_hooks


def proxy_only(name: str) -> bool:
    """A header only the gateway may send: Forwarded and X-Forwarded-*, which
    oslo_middleware's HTTPProxyToWSGI and gunicorn's secure_scheme_headers
    believe, and any name a WSGI server takes for an environ variable."""
    name = name.lower()
    return name == "forwarded" or name.startswith("x-forwarded-") or "_" in name


class ForwardedHeaders:
    def rewrite(self, flow: http.HTTPFlow) -> None:
        """Called by the gate inside its fail-closed guard, not as a hook of its
        own: a hook that raised would leave the client's headers on a request
        mitmproxy then forwards."""
        headers = flow.request.headers
        for name in {name for name in headers if proxy_only(name)}:
            del headers[name]
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
