"""identity.mode = "keystone-jws": Keystone's JWS tokens verified offline,
end to end against the Keystone with `[token] provider = jws` and a Glance
whose authtoken trusts it (CLOUD_IDENTITY=1 scripts/cloud up)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from tests.support.stack import (Stack, connect, free_port, put_head, start_gateway,
                         stop)
from tests.support.api import assert_refusal, put
from tests.support.tokens import claims_of, hs256_with, new_key, public_pem, tampered, unsigned


@pytest.fixture(scope="module")
def jws(cloud, ident) -> Stack:
    """The cloud as seen through the JWS Keystone: every token is a JWS."""
    return Stack({**cloud, "keystone_url": ident["keystone_jws_url"] + "/v3", "glance_url": ident["glance_jws_url"]})


def jws_gateway(tmp: Path, jws: Stack, ident: dict, **config):
    identity = {"mode": "keystone-jws", "jws_public_keys": ident["jws_public_keys"],
                **config.pop("identity", {})}
    return start_gateway(tmp, jws, identity=identity, **config)


@pytest.fixture(scope="module")
def offline(jws, ident, tmp_path_factory):
    """Offline, and with no Keystone at all: whatever it decides, it decided alone."""
    gw = jws_gateway(tmp_path_factory.mktemp("offline"), jws, ident,
                     keystone=f"http://127.0.0.1:{free_port()}")
    with httpx.Client(base_url=gw.url, timeout=60) as client:
        yield client
    stop(gw.proc)


@pytest.fixture(scope="module")
def confirm(jws, ident, tmp_path_factory):
    gw = jws_gateway(tmp_path_factory.mktemp("confirm"), jws, ident, cache_seconds=1,
                     identity={"jws_check": "confirm"})
    with httpx.Client(base_url=gw.url, timeout=60) as client:
        yield client
    stop(gw.proc)


def keystone_private_key(ident: dict):
    return load_pem_private_key(Path(ident["jws_private_key"]).read_bytes(), None)


def forged(jws: Stack, ident: dict) -> dict[str, str]:
    """Tokens that must never pass, each derived from a real one of userA."""
    real = jws.new_token("userA")
    claims = claims_of(real)
    now = int(time.time())
    public = Path(ident["jws_public_keys"], "public.pem").read_bytes()
    return {
        "expired": jwt.encode({**claims, "iat": now - 7200, "exp": now - 3600},
                              keystone_private_key(ident), algorithm="ES256"),
        "tampered": tampered(real, openstack_project_id=jws.user("userB")["project_id"]),
        "wrong_key": jwt.encode(claims, new_key(), algorithm="ES256"),
        "alg_none": unsigned(claims),
        "hs256_with_public_key": hs256_with(public, claims),
        "no_exp": jwt.encode({k: v for k, v in claims.items() if k != "exp"},
                             keystone_private_key(ident), algorithm="ES256"),
        "fernet": "gAAAAAB" + "x" * 180,
    }


def test_offline_upload_without_any_keystone(jws, offline):
    image_id = jws.create_image()
    r = put(offline, image_id, jws.token("userA"), b"decided offline")
    assert r.status_code == 204, r.text
    assert jws.image(image_id)["size"] == len(b"decided offline")


def test_offline_token_whitespace_is_ignored(jws, offline):
    """Sent on a raw socket: HTTP clients trim header values themselves."""
    image_id = jws.create_image()
    with connect(str(offline.base_url)) as sock:
        sock.sendall(put_head(image_id, f" \t{jws.token('userA')} \t", 4, expect=False) + b"data")
        assert sock.recv(65536).startswith(b"HTTP/1.1 204")
    assert jws.image(image_id)["size"] == 4


@pytest.mark.parametrize("kind", ["expired", "tampered", "wrong_key", "alg_none", "hs256_with_public_key",
                                  "no_exp", "fernet"])
def test_offline_refuses_forged_tokens(jws, ident, offline, kind):
    image_id = jws.create_image()
    r = put(offline, image_id, forged(jws, ident)[kind])
    assert_refusal(r, 401, "authentication")
    assert r.headers["www-authenticate"].startswith('Keystone uri="')
    jws.assert_untouched(image_id)


def test_offline_tries_every_public_key(jws, ident, tmp_path):
    """Keystone's key directory may hold several keys (rotation): any may have signed."""
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "0-other.pem").write_bytes(public_pem(new_key()))
    (keys / "1-keystone.pem").write_bytes(Path(ident["jws_public_keys"], "public.pem").read_bytes())
    with jws_gateway(tmp_path, jws, ident, identity={"jws_public_keys": str(keys)}) as gw:
        image_id = jws.create_image()
        assert put(httpx.Client(base_url=gw.url), image_id, jws.token("userA")).status_code == 204


def test_offline_caller_is_never_admin(jws, offline):
    """No roles in a JWS token: admin's token is just a token of project admin."""
    image_id = jws.create_image()
    assert_refusal(put(offline, image_id, jws.token("admin")), 403, "owner")
    jws.assert_untouched(image_id)


def test_offline_cannot_see_revocation_but_glance_does(jws, offline):
    """The documented trade-off: offline, a revoked token passes the gateway;
    Glance's own authtoken asks Keystone and refuses it."""
    token = jws.new_token("userA")
    image_id = jws.create_image()
    r = jws.http.delete(f"{jws.keystone}/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token})
    assert r.status_code == 204
    assert put(offline, image_id, token).status_code == 401
    jws.assert_untouched(image_id)


def test_confirm_gets_roles_from_keystone(jws, confirm):
    image_id = jws.create_image()
    assert put(confirm, image_id, jws.token("admin")).status_code == 204
    assert jws.image(image_id)["status"] == "active"


def test_confirm_refuses_a_revoked_token_once_its_cache_entry_lapses(jws, confirm):
    token = jws.new_token("userA")
    assert put(confirm, jws.create_image(), token).status_code == 204
    r = jws.http.delete(f"{jws.keystone}/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token})
    assert r.status_code == 204
    time.sleep(1.5)  # cache_seconds = 1
    image_id = jws.create_image()
    assert_refusal(put(confirm, image_id, token), 401, "authentication")
    jws.assert_untouched(image_id)


@pytest.mark.parametrize("kind", ["tampered", "wrong_key", "alg_none", "hs256_with_public_key"])
def test_confirm_refuses_forged_tokens(jws, ident, confirm, kind):
    image_id = jws.create_image()
    assert_refusal(put(confirm, image_id, forged(jws, ident)[kind]), 401, "authentication")
    jws.assert_untouched(image_id)


def test_confirm_fails_closed_without_keystone_but_refuses_forgeries_offline(jws, ident, tmp_path):
    with jws_gateway(tmp_path, jws, ident, keystone=f"http://127.0.0.1:{free_port()}",
                     identity={"jws_check": "confirm"}) as gw:
        client = httpx.Client(base_url=gw.url)
        image_id = jws.create_image()
        assert_refusal(put(client, image_id, jws.new_token("userA")), 503, "keystone")
        assert_refusal(put(client, image_id, forged(jws, ident)["wrong_key"]), 401, "authentication")
    jws.assert_untouched(image_id)


def test_unknown_image_offline(jws, offline):
    assert_refusal(put(offline, str(uuid.uuid4()), jws.token("userA")), 404, "no image")
