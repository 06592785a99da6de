"""The HTTP client of the gateway's own calls to Keystone, Glance and the
limits API, and the one mapping of their failures to exceptions."""

from __future__ import annotations

import ssl

import httpx

from policy.exceptions import Misconfigured, Unavailable

# An idle pooled connection is dropped after this, before the server's own
# keep-alive timeout (gunicorn: 2 s) closes it: a call reusing a connection the
# server is closing that very moment fails, and its upload would get a 503.
KEEPALIVE_SECONDS = 1

# What a call that could not get an answer raises. httpx does not wrap a TLS
# alert that arrives after the handshake (TLS 1.3: a server refusing the
# client's certificate says so on the first read).
ERRORS = (httpx.HTTPError, ssl.SSLError)


def verifying(ca_file: str = "", cert_file: str = "", key_file: str = "") -> ssl.SSLContext:
    """TLS that verifies the server's certificate and name against ca_file, or
    the system store when unset (not certifi's bundle, which httpx would use):
    there is no way to turn verification off. cert_file/key_file: a client
    certificate, for mutual TLS."""
    context = ssl.create_default_context(cafile=ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context


def client(timeout: float, tls: ssl.SSLContext | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=timeout, verify=tls or verifying(),
                             limits=httpx.Limits(keepalive_expiry=KEEPALIVE_SECONDS))


async def call(http: httpx.AsyncClient, dependency: str, method: str, url: str, **kw) -> httpx.Response:
    """The response, whatever its status below 500; no answer, or a 5xx, is Unavailable."""
    try:
        response = await http.request(method, url, **kw)
    except ERRORS as e:
        raise Unavailable(dependency, f"{type(e).__name__}: {e}") from None
    if response.status_code >= 500:
        raise Unavailable(dependency, f"answered {response.status_code}")
    return response


def refused(dependency: str, what: str, response: httpx.Response, identity_fix: str, url_key: str) -> Unavailable:
    """What an unexpected answer to a call made with the gateway's own identity
    means: its identity refused (401, 403) or a wrong URL (404) is Misconfigured."""
    status = response.status_code
    detail = f"{what} answered {status}"
    if status in (401, 403):
        return Misconfigured(dependency, detail, identity_fix)
    if status == 404:
        return Misconfigured(dependency, detail, f"check {url_key} ({response.request.url.copy_with(query=None)})")
    return Unavailable(dependency, detail)
