"""identity.mode = "jwt" (policy/identity/jwks.py): an identity provider's
tokens checked with the keys it publishes, against a local IdP serving its
JWKS on loopback (tests/tokens.py); no cloud."""

from __future__ import annotations

import asyncio
import ssl
import time

import jwt
import pytest

from policy.config import IdentityConf
from policy.exceptions import InvalidToken, Unavailable
from policy.identity.jwks import JwksVerifier, claim
from tests.support.tokens import Provider

USER = {"user_id": "u1", "project_id": "p1"}


@pytest.fixture
def idp():
    provider = Provider()
    yield provider
    provider.close()


def verifier(idp: Provider, **conf) -> JwksVerifier:
    return JwksVerifier(IdentityConf(mode="jwt", trusted_auth=True, jwks_url=idp.url, issuer=idp.issuer,
                                     audience=idp.audience, **conf), timeout=2, tls=ssl.create_default_context())


def validate(v: JwksVerifier, token: str):
    return asyncio.run(v.validate(token))


def signed(idp: Provider, kid: str, **claims) -> str:
    """A token signed with the IdP's current key, its header naming `kid`."""
    body = {"iss": idp.issuer, "aud": idp.audience, "sub": "u1", "project_id": "p1", "exp": int(time.time()) + 60}
    return jwt.encode({**body, **claims}, idp.keys[idp.kid], algorithm="ES256", headers={"kid": kid})


def test_a_token_of_the_idp_names_its_caller(idp):
    identity = validate(verifier(idp), idp.token(USER, roles=("member", "admin")))
    assert (identity.user_id, identity.project_id, identity.roles) == ("u1", "p1", frozenset({"member", "admin"}))


def test_a_rotated_key_is_fetched_an_unknown_one_refused(idp):
    v = verifier(idp, jwks_refetch_cooldown_seconds=0)
    assert validate(v, idp.token(USER)).user_id == "u1"
    idp.rotate()
    assert validate(v, idp.token(USER)).user_id == "u1"  # a new kid: the key set is read again
    with pytest.raises(InvalidToken, match="unknown key 'nobody'"):
        validate(v, signed(idp, "nobody"))


@pytest.mark.parametrize("claims, problem", [
    ({"aud": "nova"}, "not a valid token"),
    ({"iss": "https://other.test"}, "not a valid token"),
    ({"exp": int(time.time()) - 60}, "not a valid token"),
    ({"project_id": None}, "no 'project_id' claim"),
    ({"sub": ""}, "no 'sub' claim"),
    ({"roles": "admin"}, "not a list of role names"),
])
def test_a_token_the_gateway_cannot_read_a_caller_from_is_refused(idp, claims, problem):
    with pytest.raises(InvalidToken, match=problem):
        validate(verifier(idp), signed(idp, idp.kid, **claims))


def test_not_a_jwt_is_refused_without_asking_the_idp(idp):
    with pytest.raises(InvalidToken, match="not a JWT"):
        validate(verifier(idp), "gAAAAABkeystone-fernet")
    assert idp.fetches == 0


def test_an_idp_that_cannot_answer_is_unavailable_never_a_refusal(idp):
    idp.down = True
    with pytest.raises(Unavailable):
        validate(verifier(idp), idp.token(USER))


def test_claims_by_dotted_path():
    claims = {"realm_access": {"roles": ["member"]}, "sub": "u"}
    assert claim(claims, "realm_access.roles") == ["member"] and claim(claims, "sub") == "u"
    assert claim(claims, "realm_access.groups") is None and claim(claims, "sub.x") is None
