"""The front of token validation: header checks, then the cache, then Keystone."""

from __future__ import annotations

from policy.decision import Identity
from policy.identity.cache import TokenCache
from policy.identity.keystone import InvalidToken, KeystoneClient


class TokenValidator:
    def __init__(self, keystone: KeystoneClient, cache: TokenCache):
        self.keystone, self.cache = keystone, cache

    async def validate(self, tokens: list[str]) -> Identity:
        """tokens: every X-Auth-Token value of the request. Raises InvalidToken
        or Unavailable; a network error is never taken for an invalid token."""
        if not tokens:
            raise InvalidToken("no X-Auth-Token header")
        if len(tokens) > 1:
            raise InvalidToken("more than one X-Auth-Token header")
        token = tokens[0].strip()
        if not token or not token.isascii() or not token.isprintable():
            raise InvalidToken("malformed X-Auth-Token header")
        if (identity := self.cache.get(token)) is not None:
            return identity
        identity = await self.keystone.validate(token)
        self.cache.put(token, identity)
        return identity
