"""trusted_auth = true: the gateway is the authenticator of a Glance without
authtoken (CLOUD_IDENTITY=1 scripts/cloud up), with Keystone tokens and with
an identity provider's JWTs (identity.mode = "jwt", a JWKS served on loopback)."""

from __future__ import annotations

import time

import httpx
import jwt
import pytest

from tests.support.stack import start_gateway, stop
from tests.support.api import assert_refusal, put
from tests.support.tokens import Provider, claims_of, hs256_with, new_key, public_pem, tampered, unsigned

FORGED = {"X-Roles": "admin", "X-Role": "admin", "X-Identity-Status": "Confirmed",
          "X-Is-Admin-Project": "True", "X-Service-Roles": "admin", "OpenStack-System-Scope": "all"}


@pytest.fixture(scope="module")
def trusted(stack, ident, tmp_path_factory):
    """Keystone tokens, validated online; Glance believes what the gateway says."""
    gw = start_gateway(tmp_path_factory.mktemp("trusted"), stack, upstream=ident["glance_trusted_url"],
                       identity={"trusted_auth": True})
    with httpx.Client(base_url=gw.url, timeout=60) as client:
        yield client
    stop(gw.proc)


def test_glance_without_authtoken_believes_headers(stack, ident):
    """Why the gateway must strip: sent straight to this Glance, forged headers work."""
    image_id = stack.create_image()
    r = httpx.get(f"{ident['glance_trusted_url']}/v2/images/{image_id}",
                  headers={"X-Identity-Status": "Confirmed", "X-Roles": "admin", "X-Project-Id": "anyone"})
    assert r.status_code == 200


def test_upload_through_trusted_gateway(stack, trusted):
    image_id = stack.create_image()
    r = put(trusted, image_id, stack.token("userA"), b"trusted upload")
    assert r.status_code == 204, r.text
    assert stack.image(image_id)["size"] == len(b"trusted upload")


def test_forged_admin_and_project_gain_nothing_on_upload(stack, trusted):
    image_id = stack.create_image()  # projA's, private
    r = put(trusted, image_id, stack.token("userB"),
            headers={**FORGED, "X-Project-Id": stack.user("userA")["project_id"]})
    assert_refusal(r, 404, "no image")
    stack.assert_untouched(image_id)


def test_forged_headers_gain_nothing_on_api_calls(stack, trusted):
    image_id = stack.create_image()
    projA = stack.user("userA")["project_id"]
    headers = {**FORGED, "X-Project-Id": projA, "X-Tenant-Id": projA, "X-User-Id": "someone",
               "X-Auth-Token": stack.token("userB")}
    assert trusted.get(f"/v2/images/{image_id}", headers=headers).status_code == 404
    assert trusted.delete(f"/v2/images/{image_id}", headers=headers).status_code == 404
    assert stack.image(image_id)["status"] == "queued"
    # A new image is owned by the token's project, whatever the headers say;
    # duplicated identity headers would be joined by Glance ("pa,pb").
    r = trusted.post("/v2/images", json={"name": "forged-owner"},
                     headers=[*headers.items(), ("X-Project-Id", stack.user("userB")["project_id"])])
    assert r.status_code == 201, r.text
    assert r.json()["owner"] == stack.user("userB")["project_id"]


def test_admin_token_is_admin(stack, trusted):
    image_id = stack.create_image()
    r = trusted.patch(f"/v2/images/{image_id}", json=[{"op": "replace", "path": "/name", "value": "by-admin"}],
                      headers={"X-Auth-Token": stack.token("admin"),
                               "Content-Type": "application/openstack-images-v2.1-json-patch"})
    assert r.status_code == 200, r.text
    assert stack.image(image_id)["name"] == "by-admin"


@pytest.mark.parametrize("token", [None, "garbage"])
def test_api_call_without_a_valid_token_is_refused_with_401(stack, trusted, token):
    r = trusted.get("/v2/images", headers={**FORGED, **({"X-Auth-Token": token} if token else {})})
    assert_refusal(r, 401, "authentication")
    assert r.headers["www-authenticate"] == f'Keystone uri="{stack.keystone}"'


def test_two_tokens_are_refused_on_api_calls(stack, trusted):
    token = stack.token("userA")
    r = trusted.get("/v2/images", headers=[("X-Auth-Token", token), ("X-Auth-Token", token)])
    assert_refusal(r, 401, "more than one")


def test_version_discovery_needs_no_token(trusted):
    assert trusted.get("/versions").status_code == 200
    assert trusted.get("/v2/images", headers={"X-Identity-Status": "Confirmed"}).status_code == 401


# ---------------------------------------------------------------- jwt mode --

@pytest.fixture(scope="module")
def provider():
    p = Provider()
    yield p
    p.close()


@pytest.fixture(scope="module")
def oidc(stack, ident, provider, tmp_path_factory):
    gw = start_gateway(tmp_path_factory.mktemp("jwt"), stack, upstream=ident["glance_trusted_url"], identity={
        "mode": "jwt", "trusted_auth": True, "jwks_url": provider.url, "issuer": provider.issuer,
        "audience": provider.audience, "algorithms": ["ES256"], "jwks_refetch_cooldown_seconds": 0})
    with httpx.Client(base_url=gw.url, timeout=60) as client:
        yield client
    stop(gw.proc)


def test_jwt_upload(stack, provider, oidc):
    image_id = stack.create_image()
    r = put(oidc, image_id, provider.token(stack.user("userA")), b"oidc upload")
    assert r.status_code == 204, r.text
    assert stack.image(image_id)["size"] == len(b"oidc upload")


def test_jwt_identity_reaches_glance(stack, provider, oidc):
    userB = stack.user("userB")
    r = oidc.post("/v2/images", json={"name": "oidc"}, headers={**FORGED, "X-Auth-Token": provider.token(userB),
                                                                "X-Project-Id": "forged"})
    assert r.status_code == 201, r.text
    assert r.json()["owner"] == userB["project_id"]


def test_jwt_roles_claim_makes_admin(stack, provider, oidc):
    image_id = stack.create_image()
    assert_refusal(put(oidc, image_id, provider.token(stack.user("userB"))), 404, "no image")
    assert put(oidc, image_id, provider.token(stack.user("userB"), roles=["admin"])).status_code == 204


def test_jwt_key_rotation_is_fetched(stack, provider, oidc):
    assert put(oidc, stack.create_image(), provider.token(stack.user("userA"))).status_code == 204
    fetches = provider.fetches
    provider.rotate()
    image_id = stack.create_image()
    assert put(oidc, image_id, provider.token(stack.user("userA"))).status_code == 204
    assert provider.fetches == fetches + 1  # the unknown kid, once


def test_jwt_refused_tokens(stack, provider, oidc):
    user = stack.user("userA")
    now = int(time.time())
    claims = claims_of(provider.token(user))
    cases = {
        "expired": provider.token(user, iat=now - 7200, exp=now - 3600),
        "wrong issuer": provider.token(user, iss="https://evil.example.test"),
        "wrong audience": provider.token(user, aud="nova"),
        "tampered": tampered(provider.token(user), project_id=stack.user("userB")["project_id"]),
        "alg none": unsigned(claims),
        "hs256 with the public key": hs256_with(public_pem(provider.keys[provider.kid]), claims,
                                                {"kid": provider.kid}),
        "wrong key, known kid": jwt.encode(claims, new_key(), algorithm="ES256", headers={"kid": provider.kid}),
        "unknown kid": jwt.encode(claims, new_key(), algorithm="ES256", headers={"kid": "nobody"}),
        "no project": provider.token(user, project_id=None),
    }
    for name, token in cases.items():
        image_id = stack.create_image()
        r = put(oidc, image_id, token)
        assert r.status_code == 401, (name, r.text)
        assert r.headers["www-authenticate"]
        stack.assert_untouched(image_id)


def test_jwks_down_is_503_and_never_cached_as_invalid(stack, ident, tmp_path):
    """A fresh gateway has no keys yet: with the JWKS down it cannot tell, so
    503; once the JWKS is back the same token passes."""
    p = Provider()
    gw = start_gateway(tmp_path, stack, upstream=ident["glance_trusted_url"], identity={
        "mode": "jwt", "trusted_auth": True, "jwks_url": p.url, "issuer": p.issuer, "audience": p.audience})
    try:
        client = httpx.Client(base_url=gw.url, timeout=30)
        token, image_id = p.token(stack.user("userA")), stack.create_image()
        p.down = True
        assert_refusal(put(client, image_id, token), 503, "jwks")
        assert client.get("/v2/images", headers={"X-Auth-Token": token}).status_code == 503
        stack.assert_untouched(image_id)
        p.down = False
        assert put(client, image_id, token).status_code == 204
    finally:
        stop(gw.proc)
        p.close()
