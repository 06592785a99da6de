"""Tokens of an OpenID Connect (or any JWT) identity provider, verified with
the keys it publishes at its JWKS URL.

pyjwt's PyJWKClient caches the key set and fetches it again for an unknown
`kid` (a rotated key). Its fetch is blocking urllib: it runs on a worker
thread so the proxy's event loop never waits on the network."""

from __future__ import annotations

import asyncio
import ssl

import jwt
from jwt import PyJWKClient, PyJWKClientConnectionError, PyJWKClientError

from policy.config import IdentityConf
from policy.decision import Identity
from policy.exceptions import InvalidToken, Unavailable


def claim(claims: dict, path: str):
    """A claim by its dotted path, e.g. `realm_access.roles`; None if absent."""
    value = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


class JwksVerifier:
    method = "jwt"

    def __init__(self, conf: IdentityConf, timeout: float, tls: ssl.SSLContext):
        self.conf = conf
        self.keys = PyJWKClient(conf.jwks_url, lifespan=conf.jwks_cache_seconds, timeout=timeout, ssl_context=tls,
                                cooldown_duration=conf.jwks_refetch_cooldown_seconds)

    async def validate(self, token: str) -> Identity:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as e:
            raise InvalidToken(f"not a JWT ({e})") from None
        key = await asyncio.to_thread(self._signing_key, kid)
        c = self.conf
        try:
            claims = jwt.decode(token, key, algorithms=list(c.algorithms), leeway=c.leeway_seconds,
                                issuer=c.issuer, audience=c.audience,
                                options={"require": ["exp", "iss", "aud"]})
        except jwt.PyJWTError as e:
            raise InvalidToken(f"not a valid token of {c.issuer} ({e})") from None
        user, project, roles = (claim(claims, c.user_claim), claim(claims, c.project_claim),
                                claim(claims, c.roles_claim) or [])
        if not isinstance(user, str) or not user:
            raise InvalidToken(f"the token has no {c.user_claim!r} claim")
        if not isinstance(project, str) or not project:
            raise InvalidToken(f"the token has no {c.project_claim!r} claim")
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise InvalidToken(f"the token's {c.roles_claim!r} claim is not a list of role names")
        return Identity(user_id=user, project_id=project, roles=frozenset(roles),
                        expires_at=float(claims["exp"]))

    def _signing_key(self, kid: str | None):
        """The raw public key for kid (on a worker thread). An endpoint that cannot
        answer, or answers garbage, is Unavailable; an unknown kid is InvalidToken."""
        try:
            return self.keys.get_signing_key(kid).key
        except PyJWKClientConnectionError as e:
            raise Unavailable("jwks", str(e)) from None
        except ssl.SSLError as e:  # a TLS alert after the handshake, which pyjwt does not wrap
            raise Unavailable("jwks", f"{type(e).__name__}: {e}") from None
        except PyJWKClientError as e:
            if self.keys.jwk_set_cache is None or self.keys.jwk_set_cache.get() is None:
                raise Unavailable("jwks", str(e)) from None  # no usable key set at all
            raise InvalidToken(f"signed by an unknown key {kid!r}") from None
        except (jwt.PyJWTError, ValueError) as e:  # not JSON, or not a key set
            raise Unavailable("jwks", f"{type(e).__name__}: {e}") from None
