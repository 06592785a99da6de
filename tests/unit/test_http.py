"""The gateway's own calls (policy/http.py): TLS always verified; no answer or
a 5xx is Unavailable (503), never a refusal of the caller; an answer that
refuses the gateway's own identity or URL is Misconfigured, naming the fix."""

from __future__ import annotations

import asyncio
import ssl

import httpx
import pytest

from policy import http
from policy.exceptions import Misconfigured, Unavailable


def answering(status: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(status)))


def failing(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def test_tls_is_verified_with_the_name_and_at_least_tls_1_2():
    context = http.verifying()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize("status", [200, 401, 404, 499])
def test_an_answer_below_500_is_the_callers_to_read(status):
    response = asyncio.run(http.call(answering(status), "glance", "GET", "http://glance/v2/images"))
    assert response.status_code == status


@pytest.mark.parametrize("client, detail", [
    (answering(502), "answered 502"),
    (httpx.AsyncClient(transport=httpx.MockTransport(failing)), "ConnectError: connection refused"),
])
def test_no_answer_or_a_5xx_is_unavailable(client, detail):
    with pytest.raises(Unavailable) as e:
        asyncio.run(http.call(client, "glance", "GET", "http://glance/v2/images"))
    assert (e.value.dependency, e.value.detail, e.value.reason) == ("glance", detail, "upstream_unavailable")


def refusal(status: int) -> Unavailable:
    response = httpx.Response(status, request=httpx.Request("GET", "http://keystone/v3/limits?project_id=p"))
    return http.refused("keystone", "GET /v3/limits", response, "check [keystone] username", "keystone.url")


def test_an_identity_refused_or_a_wrong_url_is_misconfigured_and_says_what_to_fix():
    for status in (401, 403):
        e = refusal(status)
        assert isinstance(e, Misconfigured) and e.fix == "check [keystone] username"
        assert e.detail == f"GET /v3/limits answered {status}; check [keystone] username"
    wrong_url = refusal(404)
    assert isinstance(wrong_url, Misconfigured)
    assert wrong_url.fix == "check keystone.url (http://keystone/v3/limits)"  # the URL, without its query
    other = refusal(400)
    assert type(other) is Unavailable and other.detail == "GET /v3/limits answered 400"
