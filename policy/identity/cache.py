"""Valid identities, keyed by a hash of the token so tokens are not held in
the clear. An entry never outlives cache_seconds nor the token's own expiry."""

from __future__ import annotations

import hashlib
import time

from cachetools import TLRUCache

from policy.decision import Identity


class TokenCache:
    def __init__(self, cache_seconds: float, maxsize: int = 10_000, timer=time.time):
        self._seconds = cache_seconds
        self._cache: TLRUCache[str, Identity] = TLRUCache(
            maxsize=maxsize, ttu=self._expires, timer=timer)

    def _expires(self, _key: str, identity: Identity, now: float) -> float:
        return min(now + self._seconds, identity.expires_at)

    @staticmethod
    def _key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def get(self, token: str) -> Identity | None:
        return self._cache.get(self._key(token))

    def put(self, token: str, identity: Identity) -> None:
        self._cache[self._key(token)] = identity
