"""The two ledgers, one contract: the same cases against the in-memory ledger
and against ledger.lua in a real redis-server."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from policy.config import UNLIMITED
from policy.quota.ledger import MemoryLedger, Usage
from policy.quota.redis_ledger import RedisLedger
from tests.redis_server import RedisServer

LEASE = 1.0  # the renewed lease below renews ten times as often: a stalled loop or Redis has slack
NONE = Usage(0, 0)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis-ledger")).start()
    yield server.url
    server.stop()


@pytest.fixture(params=["memory", "redis"])
def ledger(request):
    if request.param == "memory":
        return MemoryLedger(LEASE, keep_commits_seconds=60)
    return RedisLedger(request.getfixturevalue("redis_url"), 1, LEASE, keep_commits_seconds=60)


def run(coro):
    return asyncio.run(coro)


def project() -> str:
    return f"p-{uuid.uuid4()}"


def test_exact_reservations_never_pass_the_limit(ledger):
    async def go():
        p = project()
        first = await ledger.reserve(p, "a", 60, Usage(30, 0), 100, UNLIMITED, partial=False)
        second = await ledger.reserve(p, "b", 20, Usage(30, 0), 100, UNLIMITED, partial=False)
        return first, second
    first, second = run(go())
    assert (first.bytes, first.used) == (60, 30)
    assert (second.bytes, second.used, second.uploads) == (0, 90, 1)


def test_partial_reservation_grants_what_is_left(ledger):
    async def go():
        p = project()
        grant = await ledger.reserve(p, "a", 50, Usage(80, 0), 100, UNLIMITED, partial=True)
        more = await ledger.extend(p, "a", 50, Usage(80, 0), 100)
        return grant, more
    grant, more = run(go())
    assert grant.bytes == 20 and more.bytes == 0


def test_concurrent_reservations_are_atomic(ledger):
    """50 reservations of 10 bytes at once against a limit of 95: nine win."""
    async def go():
        p = project()
        grants = await asyncio.gather(*(ledger.reserve(p, str(i), 10, NONE, 95, UNLIMITED, False)
                                        for i in range(50)))
        return [g.bytes for g in grants]
    assert sorted(run(go()), reverse=True)[:10] == [10] * 9 + [0]


def test_uploads_cap(ledger):
    async def go():
        p = project()
        a = await ledger.reserve(p, "a", 1, NONE, UNLIMITED, 1, False)
        b = await ledger.reserve(p, "b", 1, NONE, UNLIMITED, 1, False)
        await ledger.release(p, "a")
        c = await ledger.reserve(p, "c", 1, NONE, UNLIMITED, 1, False)
        return a, b, c
    a, b, c = run(go())
    assert (a.bytes, b.bytes, b.uploads, c.bytes) == (1, 0, 1, 1)


def test_a_commit_counts_only_for_readings_older_than_it(ledger):
    async def go():
        p = project()
        await ledger.reserve(p, "a", 40, NONE, 100, UNLIMITED, False)
        await ledger.commit(p, "a")
        generation = await ledger.generation(p)
        stale = await ledger.reserve(p, "b", 70, Usage(0, 0), 100, UNLIMITED, False)  # before the commit
        fresh = await ledger.reserve(p, "c", 60, Usage(40, generation), 100, UNLIMITED, False)
        return generation, stale, fresh
    generation, stale, fresh = run(go())
    assert generation >= 1
    assert (stale.bytes, stale.used) == (0, 40)
    assert (fresh.bytes, fresh.used) == (60, 40)


def test_release_gives_the_bytes_back(ledger):
    async def go():
        p = project()
        await ledger.reserve(p, "a", 100, NONE, 100, UNLIMITED, False)
        await ledger.release(p, "a")
        return await ledger.reserve(p, "b", 100, NONE, 100, UNLIMITED, False)
    assert run(go()).bytes == 100


def test_an_unrenewed_lease_runs_out_a_renewed_one_does_not(ledger):
    async def go():
        p = project()
        await ledger.reserve(p, "dead", 50, NONE, 100, UNLIMITED, False)
        await ledger.reserve(p, "alive", 50, NONE, 100, UNLIMITED, False)
        deadline = time.monotonic() + 3 * LEASE
        while time.monotonic() < deadline:
            assert await ledger.renew(p, "alive")
            await asyncio.sleep(LEASE / 10)
        return (await ledger.renew(p, "dead"), await ledger.extend(p, "dead", 1, NONE, 100),
                await ledger.reserve(p, "new", 50, NONE, 100, UNLIMITED, False),
                await ledger.reserve(p, "more", 1, NONE, 100, UNLIMITED, False))
    renewed, extended, new, more = run(go())
    assert renewed is False and extended is None
    assert new.bytes == 50 and more.bytes == 0
