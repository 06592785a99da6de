"""Keystone's JWS tokens (`[token] provider = jws`), verified offline.

Keystone signs with one private key and verifies with every public key in its
repository, trying each: the token header names no key (no `kid`). The gateway
does the same with a copy of that directory. The token carries the user, the
project and the expiry, but no roles and nothing about revocation: hence the
two checks of README "keystone-jws"."""

from __future__ import annotations

from pathlib import Path

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from policy.config import IdentityConf
from policy.decision import Identity
from policy.exceptions import ConfigError, InvalidToken
from policy.identity.keystone import KeystoneClient

# What Keystone's JWSFormatter writes into every token it issues.
REQUIRED_CLAIMS = ["sub", "exp", "iat", "openstack_methods", "openstack_audit_ids"]


def load_public_keys(directory: str) -> list:
    """Every public key in the directory, as Keystone loads them; read at start."""
    path = Path(directory)
    if not path.is_dir():
        raise ConfigError(f"identity.jws_public_keys: {directory} is not a directory")
    keys = []
    for file in sorted(p for p in path.iterdir() if p.is_file()):
        try:
            keys.append(load_pem_public_key(file.read_bytes()))
        except ValueError:
            raise ConfigError(f"identity.jws_public_keys: {file} is not a PEM public key") from None
    if not keys:
        raise ConfigError(f"identity.jws_public_keys: no public key in {directory}")
    return keys


class JwsVerifier:
    """The offline check: signature by one of Keystone's keys, expiry, scope.
    The caller is never admin: the token has no roles."""

    method = "keystone-jws"

    def __init__(self, conf: IdentityConf, keys: list):
        self.keys, self.algorithms, self.leeway = keys, list(conf.algorithms), conf.leeway_seconds

    async def validate(self, token: str) -> Identity:
        return self.verify(token)

    def verify(self, token: str) -> Identity:
        for key in self.keys:
            try:
                claims = jwt.decode(token, key, algorithms=self.algorithms, leeway=self.leeway,
                                    options={"require": REQUIRED_CLAIMS})
            except (jwt.InvalidSignatureError, jwt.InvalidKeyError):
                continue  # another of Keystone's keys (or key types) may have signed it
            except jwt.PyJWTError as e:
                raise InvalidToken(f"not a valid Keystone JWS token ({e})") from None
            project = claims.get("openstack_project_id")
            if not isinstance(project, str) or not project:
                raise InvalidToken("the token is not scoped to a project")
            return Identity(user_id=claims["sub"], project_id=project, roles=frozenset(),
                            expires_at=float(claims["exp"]))
        raise InvalidToken("the token is signed by none of Keystone's keys")


class ConfirmedJws:
    """The confirm check: the offline check first, so a forged, expired or
    foreign token never costs a call to Keystone; then Keystone itself, for
    the roles and revocation (the validator's cache spares it on a hit)."""

    method = "keystone-jws"

    def __init__(self, offline: JwsVerifier, keystone: KeystoneClient):
        self.offline, self.keystone = offline, keystone

    async def validate(self, token: str) -> Identity:
        self.offline.verify(token)
        return await self.keystone.validate(token)
