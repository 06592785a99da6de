"""The HTTP client of the gateway's own calls to Keystone, Glance and the
limits API, and the one mapping of their failures to exceptions."""

from __future__ import annotations

import httpx

from policy.exceptions import Misconfigured, Unavailable

# An idle pooled connection is dropped after this, before the server's own
# keep-alive timeout (gunicorn: 2 s) closes it: a call reusing a connection the
# server is closing that very moment fails, and its upload would get a 503.
KEEPALIVE_SECONDS = 1


def client(timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(keepalive_expiry=KEEPALIVE_SECONDS))


async def call(http: httpx.AsyncClient, dependency: str, method: str, url: str, **kw) -> httpx.Response:
    """The response, whatever its status below 500; no answer, or a 5xx, is Unavailable."""
    try:
        response = await http.request(method, url, **kw)
    except httpx.HTTPError as e:
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
