"""From [identity] to the parts of the chosen mode (policy/identity/modes.py):
who checks a token, and how the gateway's calls to Glance say who asks."""

from __future__ import annotations

import pytest

from policy.exceptions import ConfigError
from policy.glance import TokenCredentials
from policy.identity import KeystoneClient
from policy.identity.jwks import JwksVerifier
from policy.identity.jws import ConfirmedJws, JwsVerifier
from policy.identity.modes import checker, credentials
from policy.identity.trusted import TrustedCredentials
from tests.support.fakes import config
from tests.support.tokens import new_key, public_pem

JWT = {"mode": "jwt", "trusted_auth": True, "jwks_url": "https://idp/jwks", "issuer": "https://idp",
       "audience": "glance"}


@pytest.fixture
def keys(tmp_path):
    (tmp_path / "0.pem").write_bytes(public_pem(new_key()))
    return str(tmp_path)


def parts(identity: dict):
    conf = config(100, identity=identity)
    keystone = KeystoneClient(conf.keystone)
    return checker(conf, keystone), credentials(conf, keystone), keystone


def test_keystone_mode_checks_with_keystone_and_calls_glance_with_the_callers_token():
    check, creds, keystone = parts({})
    assert check is keystone and type(creds) is TokenCredentials


def test_keystone_jws_checks_offline_or_confirms_with_keystone(keys):
    offline, _, _ = parts({"mode": "keystone-jws", "jws_public_keys": keys})
    confirm, creds, _ = parts({"mode": "keystone-jws", "jws_public_keys": keys, "jws_check": "confirm",
                               "trusted_auth": True})
    assert type(offline) is JwsVerifier and type(confirm) is ConfirmedJws
    assert type(creds) is TrustedCredentials  # Glance trusts the identity the gateway injects


def test_jwt_mode_checks_with_the_idps_keys():
    check, creds, _ = parts(JWT)
    assert type(check) is JwksVerifier and type(creds) is TrustedCredentials


def test_unreadable_jws_keys_are_refused_at_start_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match="identity.jws_public_keys: no public key"):
        parts({"mode": "keystone-jws", "jws_public_keys": str(tmp_path)})
