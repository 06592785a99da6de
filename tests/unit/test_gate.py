"""The upload policy in the spec's order (policy/gate.py), with plain values:
hypothesis over generated tokens, headers, images and quotas, on the memory
ledger and on ledger.lua in a real redis-server."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as redis
from hypothesis import given, settings
from hypothesis import strategies as st

from policy import config as configuration
from policy.decision import Identity, Image
from policy.exceptions import InvalidToken, Unavailable
from policy.gate import UploadRequest
from policy.routes import UPLOAD, Route
from tests.support.fakes import config, upload_gate

UNLIMITED = configuration.UNLIMITED
# The spec's rules in order, by the status each gives; 0: the status depends on the failure (401 or 503).
RULES = [400, 401, 0, 415, 500, 0, 404, 403, 400, 409, 503, 413]


@st.composite
def decision_cases(draw) -> tuple[tuple, int | None]:
    """(the inputs of one decision, the status the spec gives them): the first
    rule at fault is drawn first; every rule before it holds, every rule after
    it may hold or not, and must not matter."""
    first = draw(st.integers(0, len(RULES)))  # len(RULES): none at fault

    def rule(i, holds, fails):
        return draw(holds if i < first else fails if i == first else holds | fails)

    image_id = rule(0, st.uuids().map(str), st.sampled_from(["not-a-uuid", "", "0cb9328d-dd8c-41bb-b378-404b854b93bz"]))
    tokens = rule(1, st.sampled_from([["tok"], [" tok "]]), st.sampled_from([[], ["tok", "tok"], [""], ["t\x01k"]]))
    check = rule(2, st.just("valid"), st.sampled_from([InvalidToken("expired"), Unavailable("keystone", "timeout")]))
    media = rule(3, st.sampled_from(["application/octet-stream", "Application/Octet-Stream; x=1"]),
                 st.sampled_from([None, "", "text/plain", "application/octet-streamx"]))
    length, chunked = rule(4, st.just((None, True)) | st.tuples(st.integers(1, 2**40), st.just(False)),
                           st.sampled_from([(0, False), (None, False)]))
    lookup = rule(5, st.just("answers"), st.sampled_from([InvalidToken("refused"), Unavailable("glance", "down")]))
    exists = rule(6, st.just(None), st.sampled_from(["none", "deleted", "pending_delete"]))
    may_write = rule(7, st.sampled_from(["owner", "admin"]), st.just("other"))
    formats = rule(8, st.tuples(st.sampled_from(["raw", "qcow2"]), st.sampled_from(["bare", "ovf"])),
                   st.sampled_from([(None, "bare"), ("raw", None), ("", "bare"), (None, None)]))
    status = rule(9, st.just("queued"), st.sampled_from(["saving", "active", "killed", "importing", "uploading"]))
    usage_known = rule(10, st.just(True), st.just(False))
    fits = rule(11, st.just(True), st.just(False))

    project = draw(st.sampled_from(["projA", "projB"]))
    roles = draw(st.sets(st.sampled_from(["member", "reader"])))
    owner = {"owner": project, "admin": draw(st.sampled_from([project, "projC", None])),
             "other": draw(st.sampled_from(["projC", None]))}[may_write]
    caller = Identity("user", project, frozenset(roles | ({"admin"} if may_write == "admin" else set())), 10**10)
    image = (None if exists == "none"
             else Image("id", owner, exists or status, *formats))
    # The room an upload needs: its declared length; a chunked body of unknown
    # size needs at least one byte, so a project exactly at its limit refuses it.
    need = length or 1
    if not usage_known:
        usage, limit = Unavailable("glance", "down"), draw(st.integers(0, 2**40))
    elif fits:
        usage = draw(st.integers(0, 2**40))
        limit = draw(st.just(UNLIMITED) | st.integers(usage + need, usage + need + 2**40))
    else:
        usage = draw(st.integers(0, 2**40))
        limit = draw(st.integers(0, usage + need - 1))

    outcome = caller if check == "valid" else check
    found = image if lookup == "answers" else lookup
    failure = {2: check, 5: lookup}.get(first)
    expected = (None if first == len(RULES)
                else RULES[first] or (401 if isinstance(failure, InvalidToken) else 503))
    return (image_id, tokens, outcome, media, length, chunked, found, usage, limit), expected


@pytest.fixture(scope="module", params=["memory", "redis"])
def ledger(request) -> dict:
    """The quota keys of config.toml for each kind of ledger."""
    return {} if request.param == "memory" else {"ledger": "redis", "redis_url": request.getfixturevalue("redis_url")}


def decide(image_id, tokens, outcome, media, length, chunked, image, usage, limit, ledger=None) -> int | None:
    # No wait for room: no one frees it.
    gate = upload_gate(config(limit, wait_seconds=0, **(ledger or {})), outcome, image, usage)
    request = UploadRequest(Route(UPLOAD, image_id), tokens, media, length, chunked)

    async def go():
        try:
            return await gate.decide(request)
        finally:
            await gate.quota.ledger.close()
            if ledger:  # the next example's projects start unseeded, as on the memory ledger
                async with redis.from_url(ledger["redis_url"]) as r:
                    await r.flushdb()
    verdict = asyncio.run(go())
    return verdict.refusal.status if verdict.refusal else None


@settings(deadline=None)  # on ledger.lua, a real redis-server answers: under load, slower than the default 200 ms
@given(decision_cases())
def test_the_first_rule_at_fault_in_spec_order_decides(ledger, case):
    inputs, expected = case
    assert decide(*inputs, ledger=ledger) == expected


@given(st.text(), st.lists(st.text(), max_size=3), st.none() | st.text(), st.none() | st.integers(0),
       st.booleans(), st.none() | st.builds(Image, st.text(), st.none() | st.text(), st.text(), st.none() | st.text(),
                                             st.none() | st.text()),
       st.integers(0), st.integers(UNLIMITED))
def test_a_refusal_is_always_one_of_the_spec(image_id, tokens, media, length, chunked, image, usage, limit):
    caller = Identity("user", "projA", frozenset({"member"}), 10**10)
    status = decide(image_id, tokens, caller, media, length, chunked, image, usage, limit)
    assert status in {None, 400, 401, 403, 404, 409, 413, 415, 500, 503}

