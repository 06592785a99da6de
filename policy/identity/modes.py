"""From `[identity]` to the parts of the chosen mode: who checks a token, and
how the gateway's own calls to Glance say who is asking."""

from __future__ import annotations

from policy.config import Config
from policy.glance import Credentials, TokenCredentials
from policy.identity.jwks import JwksVerifier
from policy.identity.jws import ConfirmedJws, JwsVerifier, load_public_keys
from policy.identity.keystone import KeystoneClient
from policy.identity.trusted import TrustedCredentials
from policy.identity.validator import Checker


def checker(config: Config, keystone: KeystoneClient) -> Checker:
    """Raises ConfigError when the mode's keys cannot be read."""
    ident = config.identity
    if ident.mode == "keystone-jws":
        offline = JwsVerifier(ident, load_public_keys(ident.jws_public_keys))
        return offline if ident.jws_check == "offline" else ConfirmedJws(offline, keystone)
    if ident.mode == "jwt":
        return JwksVerifier(ident, timeout=config.keystone.timeout_seconds, tls=keystone.tls)
    return keystone


def credentials(config: Config, keystone: KeystoneClient) -> Credentials:
    if config.identity.trusted_auth:
        return TrustedCredentials(config.policy.admin_roles)
    return TokenCredentials(keystone, config.policy.admin_roles)
