"""The token cache (policy/identity/cache.py): an identity is served from it
for at most keystone.cache_seconds, and never past its token's expiry."""

from __future__ import annotations

from policy.decision import Identity
from policy.identity.cache import TokenCache


def test_token_cache_never_outlives_the_token():
    now = [1000.0]
    cache = TokenCache(cache_seconds=300, timer=lambda: now[0])
    short = Identity("u", "p", frozenset(), expires_at=1010)
    cache.put("t", short)
    assert cache.get("t") == short
    now[0] = 1011
    assert cache.get("t") is None
    cache.put("t2", Identity("u", "p", frozenset(), expires_at=99_999))
    now[0] = 1011 + 301
    assert cache.get("t2") is None
