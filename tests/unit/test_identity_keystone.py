"""Online token validation (policy/identity/keystone.py) against a Keystone
answering over httpx's mock transport: the caller's identity, refusals as
keystonemiddleware gives them, and the gateway's own login."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from policy.config import Keystone
from policy.exceptions import InvalidToken, Misconfigured, Unavailable
from policy.identity.keystone import KeystoneClient

EXPIRES = "2999-01-01T00:00:00.000000Z"
CALLER = {"user": {"id": "u1"}, "project": {"id": "p1"}, "roles": [{"name": "member"}, {"name": "reader"}],
          "expires_at": EXPIRES}


class FakeKeystone:
    """Issues service tokens svc-1, svc-2…; `revoked`: the service tokens it no longer accepts."""

    def __init__(self, login_status: int = 201):
        self.login_status, self.logins, self.revoked = login_status, 0, set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v3/auth/tokens" and request.url.query == b"nocatalog"
        if request.method == "POST":
            self.logins += 1
            return httpx.Response(self.login_status, headers={"X-Subject-Token": f"svc-{self.logins}"},
                                  json={"token": {"expires_at": EXPIRES, "roles": [{"name": "service"}]}})
        if request.headers["X-Auth-Token"] in self.revoked:
            return httpx.Response(401)
        subject = request.headers["X-Subject-Token"]
        if subject == "good":
            return httpx.Response(200, json={"token": CALLER})
        if subject == "unscoped":
            return httpx.Response(200, json={"token": {**CALLER, "project": None}})
        if subject == "forbidden":
            return httpx.Response(403)
        return httpx.Response(404)


def client(keystone: FakeKeystone, **conf) -> KeystoneClient:
    settings = Keystone(url="http://keystone", username="gw", password="pw", project="service", **conf)
    return KeystoneClient(settings, httpx.AsyncClient(transport=httpx.MockTransport(keystone)))


def test_a_valid_token_gives_the_callers_identity_and_the_service_logs_in_once():
    keystone = FakeKeystone()

    async def go():
        k = client(keystone)
        return await k.validate("good"), await k.validate("good"), k.service_roles
    first, again, service_roles = asyncio.run(go())
    assert (first.user_id, first.project_id, first.roles) == ("u1", "p1", frozenset({"member", "reader"}))
    assert again == first and keystone.logins == 1 and service_roles == frozenset({"service"})


@pytest.mark.parametrize("token, problem", [("gone", "unknown, expired or revoked"), ("unscoped", "not scoped")])
def test_an_unknown_or_unscoped_token_is_invalid(token, problem):
    with pytest.raises(InvalidToken, match=problem):
        asyncio.run(client(FakeKeystone()).validate(token))


def test_a_revoked_service_token_is_renewed_once():
    keystone = FakeKeystone()

    async def go():
        k = client(keystone)
        await k.validate("good")
        keystone.revoked.add("svc-1")
        return await k.validate("good")
    assert asyncio.run(go()).user_id == "u1" and keystone.logins == 2


def test_a_service_login_refused_is_misconfigured_naming_the_keys():
    with pytest.raises(Misconfigured) as e:
        asyncio.run(client(FakeKeystone(login_status=401)).validate("good"))
    assert "service login as 'gw' answered 401" in e.value.detail
    assert e.value.fix == "check [keystone] username, password, project, user_domain and project_domain"


def test_a_service_user_that_may_not_validate_is_misconfigured():
    with pytest.raises(Misconfigured, match="give the service user 'gw' the service role"):
        asyncio.run(client(FakeKeystone()).validate("forbidden"))


def test_keystone_down_is_unavailable_never_invalid():
    def down(request):
        raise httpx.ConnectError("connection refused", request=request)
    with pytest.raises(Unavailable) as e:
        asyncio.run(client(down).validate("good"))
    assert not isinstance(e.value, Misconfigured) and e.value.dependency == "keystone"
