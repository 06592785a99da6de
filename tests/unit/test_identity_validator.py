"""The front of token validation (policy/identity/validator.py): one
well-formed X-Auth-Token, then the cache, then the mode's check; what each
outcome is counted as; a dependency down is never a refusal, nor cached."""

from __future__ import annotations

import asyncio

import pytest

from policy.decision import Identity
from policy.exceptions import InvalidToken, Unavailable
from policy.identity.cache import TokenCache
from policy.identity.validator import TokenValidator

CALLER = Identity("u1", "p1", frozenset({"member"}), expires_at=4_000_000_000)


class Checker:
    method = "test"

    def __init__(self, *outcomes):
        self.outcomes, self.calls = list(outcomes), []

    async def validate(self, token: str) -> Identity:
        self.calls.append(token)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def validator(checker: Checker) -> tuple[TokenValidator, list]:
    seen: list = []
    return TokenValidator(checker, TokenCache(300), lambda *event: seen.append(event)), seen


@pytest.mark.parametrize("tokens, problem", [
    ([], "no X-Auth-Token header"),
    (["a", "a"], "more than one X-Auth-Token header"),
    ([""], "malformed"), (["  "], "malformed"), (["t\x01k"], "malformed"), (["tök"], "malformed"),
])
def test_a_missing_repeated_or_malformed_token_is_refused_unchecked(tokens, problem):
    checker = Checker()
    v, seen = validator(checker)
    with pytest.raises(InvalidToken, match=problem):
        asyncio.run(v.validate(tokens))
    assert not checker.calls and seen == [("test", "malformed", "none")]


def test_a_valid_token_is_checked_once_then_served_from_the_cache():
    checker = Checker(CALLER)
    v, seen = validator(checker)

    async def go():
        return await v.validate([" tok "]), await v.validate(["tok"])
    assert asyncio.run(go()) == (CALLER, CALLER)
    assert checker.calls == ["tok"]  # surrounding whitespace is not part of it
    assert seen == [("test", "valid", "miss"), ("test", "valid", "hit")]


def test_concurrent_first_uses_share_one_check():
    checker = Checker(CALLER)
    v, seen = validator(checker)

    async def go():
        return await asyncio.gather(*(v.validate(["tok"]) for _ in range(5)))
    assert asyncio.run(go()) == [CALLER] * 5 and checker.calls == ["tok"]
    assert sorted(e[2] for e in seen) == ["miss"] + ["shared"] * 4


def test_unavailable_is_never_cached_nor_an_invalid_token():
    checker = Checker(Unavailable("keystone", "timeout"), CALLER)
    v, seen = validator(checker)

    async def go():
        with pytest.raises(Unavailable):
            await v.validate(["tok"])
        return await v.validate(["tok"])
    assert asyncio.run(go()) == CALLER and checker.calls == ["tok", "tok"]
    assert [e[1] for e in seen] == ["error", "valid"]


def test_an_invalid_token_is_not_cached_either():
    checker = Checker(InvalidToken("expired"), InvalidToken("expired"))
    v, seen = validator(checker)
    for _ in range(2):
        with pytest.raises(InvalidToken):
            asyncio.run(v.validate(["tok"]))
    assert len(checker.calls) == 2 and [e[1] for e in seen] == ["invalid", "invalid"]
