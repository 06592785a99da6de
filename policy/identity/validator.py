"""The front of token validation: header checks, then the cache, then the
checker of the configured mode (Keystone online, Keystone JWS, JWT)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from policy.decision import Identity
from policy.identity.cache import TokenCache
from policy.singleflight import SingleFlight
from policy.exceptions import InvalidToken, Unavailable

Observer = Callable[[str, str, str], None]  # (method, result, cache)


class Checker(Protocol):
    method: str  # the `method` label of glance_gate_token_validations_total

    async def validate(self, token: str) -> Identity:
        """Raises InvalidToken, or Unavailable when it cannot tell."""


def _ignore(method: str, result: str, cache: str) -> None:
    pass


class TokenValidator:
    def __init__(self, checker: Checker, cache: TokenCache, observe: Observer = _ignore):
        self.checker, self.cache, self.observe = checker, cache, observe
        self.method = checker.method
        self._flights: SingleFlight[Identity] = SingleFlight()

    async def validate(self, tokens: list[str]) -> Identity:
        """tokens: every X-Auth-Token value of the request. Raises InvalidToken
        or Unavailable; a network error is never taken for an invalid token.
        Concurrent first uses of one token share one check (cache="shared")."""
        token = self._single(tokens)
        if (identity := self.cache.get(token)) is not None:
            self.observe(self.method, "valid", "hit")
            return identity
        cache = "shared" if self._flights.pending(token) else "miss"
        try:
            identity = await self._flights.run(token, lambda: self._check(token))
        except InvalidToken:
            self.observe(self.method, "invalid", cache)
            raise
        except Unavailable:
            self.observe(self.method, "error", cache)
            raise
        self.observe(self.method, "valid", cache)
        return identity

    async def _check(self, token: str) -> Identity:
        identity = await self.checker.validate(token)
        self.cache.put(token, identity)
        return identity

    def _single(self, tokens: list[str]) -> str:
        problem = ("no X-Auth-Token header" if not tokens
                   else "more than one X-Auth-Token header" if len(tokens) > 1 else None)
        token = tokens[0].strip() if len(tokens) == 1 else ""
        if not problem and (not token or not token.isascii() or not token.isprintable()):
            problem = "malformed X-Auth-Token header"
        if problem:
            self.observe(self.method, "malformed", "none")
            raise InvalidToken(problem)
        return token
