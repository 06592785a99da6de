"""Trusted-auth mode (addons/trusted_auth.py): Glance believes the identity
headers it gets, so none of the client's reach it, and the gateway's own are
set once, from a token it validated; without a valid token, 401 or 503."""

from __future__ import annotations

import pytest

from addons.ending import Ending
from addons.trusted_auth import StripIdentity
from policy.exceptions import InvalidToken, Unavailable
from tests.support.fakes import config
from tests.support.addon_flows import IMAGE_ID, Answers, glance_gate, run, settings, upload

FORGED = {"x-identity-status": "Confirmed", "X-User-Id": "admin", "x-roles": "admin", "X-Project-Id": "projX",
          "x-service-roles": "service", "openstack-system-scope": "all", "x-is-admin-project": "True"}


def get(path: str = f"/v2/images/{IMAGE_ID}", **headers: str):
    flow = upload(headers, path=path)
    flow.request.method = "GET"
    return flow


@pytest.fixture
def answers(monkeypatch) -> Answers:
    return Answers(monkeypatch)


def test_every_identity_header_of_the_client_is_stripped():
    conf = settings(config(-1), trusted_auth=True)
    flow = get(**{"x-auth-token": "tok", **FORGED})
    StripIdentity(Ending(lambda: conf), lambda: conf).requestheaders(flow)
    assert dict(flow.request.headers) == {"host": "glance", "x-auth-token": "tok"}


def test_without_trusted_auth_glances_authtoken_strips_them_itself():
    conf = config(-1)
    flow = get(**{"x-auth-token": "tok", "X-Service-Token": "svc"})
    StripIdentity(Ending(lambda: conf), lambda: conf).requestheaders(flow)
    assert flow.request.headers["x-service-token"] == "svc", "authtoken reads it"


def test_a_strip_that_fails_ends_the_request_with_503(answers, monkeypatch):
    conf = settings(config(-1), trusted_auth=True)
    ending = Ending(lambda: conf)
    flow = get(**{"x-auth-token": "tok", **FORGED})
    monkeypatch.setattr("addons.trusted_auth.is_identity_header", lambda name: 1 / 0)
    run(lambda: _async(lambda: StripIdentity(ending, lambda: conf).requestheaders(flow)))
    assert [status for status, _, _ in answers.sent] == [503]
    assert flow.error and flow.error.msg == "Connection killed.", "never forwarded with the forged headers"
    assert ending.in_flight == 0


def test_a_valid_token_sets_the_callers_identity_once(tmp_path, answers):
    gg = glance_gate(tmp_path, trusted_auth=True)
    flow = get(**{"x-auth-token": "tok"})
    run(lambda: gg.requestheaders(flow))
    assert answers.sent == [] and flow.error is None
    headers = flow.request.headers
    assert [headers.get_all(name) for name in ("x-identity-status", "x-user-id", "x-project-id", "x-roles")] == \
        [["Confirmed"], ["userA"], ["projA"], ["member"]]


@pytest.mark.parametrize("outcome, status", [(InvalidToken("expired"), 401),
                                             (Unavailable("keystone", "connection refused"), 503)])
def test_a_request_without_a_valid_token_is_answered_at_the_gateway(tmp_path, answers, outcome, status):
    gg = glance_gate(tmp_path, trusted_auth=True, outcome=outcome)
    flow = get(**{"x-auth-token": "tok"})
    run(lambda: gg.requestheaders(flow))
    [(sent, headers, _)] = answers.sent
    assert sent == status
    assert ("WWW-Authenticate" in headers) == (status == 401)
    assert flow.error and flow.error.msg == "Connection killed."
    assert "x-identity-status" not in flow.request.headers


def test_version_discovery_passes_without_a_token_marked_invalid(tmp_path, answers):
    gg = glance_gate(tmp_path, trusted_auth=True)
    flow = get(path="/versions")
    run(lambda: gg.requestheaders(flow))
    assert answers.sent == [] and flow.error is None
    assert flow.request.headers.get_all("x-identity-status") == ["Invalid"]
    assert "x-user-id" not in flow.request.headers


def test_an_api_request_without_a_token_gets_401(tmp_path, answers):
    gg = glance_gate(tmp_path, trusted_auth=True)
    run(lambda: gg.requestheaders(get()))
    assert [status for status, _, _ in answers.sent] == [401]


async def _async(call):
    return call()
