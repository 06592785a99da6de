"""The HTTP client of the gateway's own calls to Keystone and Glance."""

from __future__ import annotations

import ssl

import httpx

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
