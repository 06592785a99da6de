"""The gateway's own identity, kept out of config.toml: a password file, the
environment, or a Keystone application credential; each logs in for real."""

from __future__ import annotations

import os

import httpx
import pytest

from tests.support.stack import start_gateway, stop

NO_PASSWORD = {"password": None}


@pytest.fixture
def gateways(stack, tmp_path):
    made = []

    def gateway(quota: dict | None = None, **keystone):
        made.append(start_gateway(tmp_path, stack, quota=quota, keystone_settings=keystone))
        return made[-1]

    yield gateway
    for gw in made:
        stop(gw.proc)


def upload(stack, gw) -> int:
    image_id = stack.create_image()
    r = httpx.put(f"{gw.url}/v2/images/{image_id}/file", content=os.urandom(4096), timeout=30,
                  headers={"X-Auth-Token": stack.token("userA"), "Content-Type": "application/octet-stream"})
    if r.status_code != 204:
        stack.assert_untouched(image_id)
    return r.status_code


def test_password_file(stack, gateways, tmp_path):
    secret = tmp_path / "password"
    secret.write_text(stack.user("gateway")["password"] + "\n")
    assert upload(stack, gateways(**NO_PASSWORD, password_file=str(secret))) == 204
    secret.write_text("wrong\n")
    assert upload(stack, gateways(**NO_PASSWORD, password_file=str(secret))) == 503


def test_password_from_the_environment(stack, gateways, monkeypatch):
    monkeypatch.setenv("GLANCE_GATE_KEYSTONE_PASSWORD", stack.user("gateway")["password"])
    assert upload(stack, gateways(**NO_PASSWORD)) == 204


@pytest.fixture
def app_credential(stack):
    """An application credential of the gateway's user, with all its roles in `service`."""
    gw = stack.user("gateway")
    token = stack.new_token("gateway")
    r = stack.http.post(f"{stack.keystone}/v3/users/{gw['user_id']}/application_credentials",
                        headers={"X-Auth-Token": token},
                        json={"application_credential": {"name": f"glance-gate-{os.urandom(4).hex()}"}})
    assert r.status_code == 201, r.text
    credential = r.json()["application_credential"]
    yield credential
    stack.http.delete(f"{stack.keystone}/v3/users/{gw['user_id']}/application_credentials/{credential['id']}",
                      headers={"X-Auth-Token": token})


def test_application_credential(stack, gateways, app_credential, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text(app_credential["secret"])
    ident = dict(username=None, password=None, project=None, application_credential_id=app_credential["id"],
                 application_credential_secret_file=str(secret))
    # projA's usage is read with the credential's roles too (admin: every project's images)
    gw = gateways(quota={stack.user("userA")["project_id"]: 2**40}, **ident)
    assert upload(stack, gw) == 204
    secret.write_text("not-the-secret")
    refused = gateways(**ident)
    image_id = stack.create_image()
    r = httpx.put(f"{refused.url}/v2/images/{image_id}/file", content=b"x" * 10, timeout=30,
                  headers={"X-Auth-Token": stack.token("userA"), "Content-Type": "application/octet-stream"})
    assert r.status_code == 503
    assert (f"the service login as application credential {app_credential['id']} answered 401; "
            "check [keystone] application_credential_id") in r.json()["message"]
    stack.assert_untouched(image_id)
