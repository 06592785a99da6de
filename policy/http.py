"""The HTTP client of the gateway's own calls to Keystone and Glance."""

from __future__ import annotations

import httpx

# An idle pooled connection is dropped after this, before the server's own
# keep-alive timeout (gunicorn: 2 s) closes it: a call reusing a connection the
# server is closing that very moment fails, and its upload would get a 503.
KEEPALIVE_SECONDS = 1


def client(timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(keepalive_expiry=KEEPALIVE_SECONDS))
