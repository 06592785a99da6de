"""identity.mode = "keystone-jws" offline (policy/identity/jws.py): a JWS
Keystone signed with any of the configured keys passes; expired, unsigned,
HMAC-signed or incomplete ones are refused (the end-to-end tests are
tests/test_identity_jws.py)."""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest

from policy.config import IdentityConf
from policy.exceptions import InvalidToken
from policy.identity.jws import JwsVerifier
from tests.support.tokens import hs256_with, new_key, public_pem, unsigned

KEY = new_key()
CLAIMS = {"sub": "u1", "openstack_project_id": "p1", "openstack_methods": ["password"],
          "openstack_audit_ids": ["a"]}


def verifier(**conf) -> JwsVerifier:
    return JwsVerifier(IdentityConf(mode="keystone-jws", jws_public_keys="/k", **conf), [new_key().public_key(), KEY.public_key()])


def sign(**changes) -> str:
    now = int(time.time())
    return jwt.encode({**CLAIMS, "iat": now, "exp": now + 60, **changes}, KEY, algorithm="ES256")


def test_jws_identity_from_any_of_the_keys():
    identity = verifier().verify(sign())
    assert (identity.user_id, identity.project_id, identity.roles) == ("u1", "p1", frozenset())


@pytest.mark.parametrize("token", [
    sign(exp=int(time.time()) - 30),
    sign(openstack_project_id=None),
    unsigned({**CLAIMS, "exp": int(time.time()) + 60, "iat": 0}),
    hs256_with(public_pem(KEY), {**CLAIMS, "exp": int(time.time()) + 60, "iat": 0}),
    jwt.encode({**CLAIMS, "iat": 0}, KEY, algorithm="ES256"),  # no exp
])
def test_jws_refusals(token):
    with pytest.raises(InvalidToken):
        asyncio.run(verifier().validate(token))


def test_jws_leeway_is_small_and_configured():
    token = sign(exp=int(time.time()) - 3)
    assert verifier(leeway_seconds=10).verify(token).user_id == "u1"
    with pytest.raises(InvalidToken):
        verifier(leeway_seconds=0).verify(token)
