"""The two ledgers, one contract: the same cases against the in-memory ledger
and against ledger.lua in a real redis-server."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from policy.config import UNLIMITED
from policy.quota.ledger import MemoryLedger, Unseeded, Usage
from policy.quota.redis_ledger import RedisLedger
from tests.support.redis_server import RedisServer

LEASE = 1.0  # the renewed lease below renews ten times as often: a stalled loop or Redis has slack


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


async def seeded(ledger, stored: int = 0) -> str:
    """A new project whose usage a listing found to be `stored` bytes."""
    p = project()
    await ledger.seed(p, Usage(stored, await ledger.generation(p)), overwrite=False)
    return p


def test_a_project_without_usage_needs_a_listing_first(ledger):
    async def go():
        p = project()
        with pytest.raises(Unseeded):
            await ledger.reserve(p, "a", 10, 100, UNLIMITED, partial=False)
        capped = await ledger.reserve(p, "b", 10, UNLIMITED, 1, partial=False)  # no byte limit: no usage needed
        first = await ledger.seed(p, Usage(30, 0), overwrite=False)
        again = await ledger.seed(p, Usage(99, 0), overwrite=False)  # a second cold reading changes nothing
        return capped, first, again, await ledger.reserve(p, "c", 70, 100, UNLIMITED, partial=False)
    capped, first, again, grant = run(go())
    assert capped.bytes == 10 and first is None and again == 0
    assert (grant.bytes, grant.used) == (0, 40)  # 30 stored, 10 held


def test_exact_reservations_never_pass_the_limit(ledger):
    async def go():
        p = await seeded(ledger, 30)
        first = await ledger.reserve(p, "a", 60, 100, UNLIMITED, partial=False)
        second = await ledger.reserve(p, "b", 20, 100, UNLIMITED, partial=False)
        return first, second
    first, second = run(go())
    assert (first.bytes, first.used) == (60, 30)
    assert (second.bytes, second.used, second.uploads) == (0, 90, 1)


def test_partial_reservation_grants_what_is_left(ledger):
    async def go():
        p = await seeded(ledger, 80)
        grant = await ledger.reserve(p, "a", 50, 100, UNLIMITED, partial=True)
        more = await ledger.extend(p, "a", 50, 100)
        return grant, more
    grant, more = run(go())
    assert grant.bytes == 20 and more.bytes == 0


def test_concurrent_reservations_are_atomic(ledger):
    """50 reservations of 10 bytes at once against a limit of 95: nine win."""
    async def go():
        p = await seeded(ledger)
        grants = await asyncio.gather(*(ledger.reserve(p, str(i), 10, 95, UNLIMITED, False)
                                        for i in range(50)))
        return [g.bytes for g in grants]
    assert sorted(run(go()), reverse=True)[:10] == [10] * 9 + [0]


def test_uploads_cap(ledger):
    async def go():
        p = project()
        a = await ledger.reserve(p, "a", 1, UNLIMITED, 1, False)
        b = await ledger.reserve(p, "b", 1, UNLIMITED, 1, False)
        await ledger.release(p, "a")
        c = await ledger.reserve(p, "c", 1, UNLIMITED, 1, False)
        return a, b, c
    a, b, c = run(go())
    assert (a.bytes, b.bytes, b.uploads, c.bytes) == (1, 0, 1, 1)


def test_a_commit_is_usage_at_once(ledger):
    async def go():
        p = await seeded(ledger, 10)
        await ledger.reserve(p, "a", 40, 100, UNLIMITED, False)
        await ledger.commit(p, "a", 40)
        return await ledger.reserve(p, "b", 60, 100, UNLIMITED, False)
    grant = run(go())
    assert (grant.bytes, grant.used) == (0, 50)


def test_a_commit_counts_what_was_stored_not_what_was_granted_ahead(ledger):
    async def go():
        p = await seeded(ledger)
        await ledger.reserve(p, "a", 30, 100, UNLIMITED, partial=True)
        await ledger.extend(p, "a", 30, 100)  # 60 granted, 45 sent
        await ledger.commit(p, "a", 45)
        return await ledger.reserve(p, "b", 55, 100, UNLIMITED, False)
    grant = run(go())
    assert (grant.bytes, grant.used) == (55, 45)


def test_a_listing_under_way_counts_the_commits_it_may_miss(ledger):
    """The listing began before a commit and did not see it: the commit is added;
    one that began after it is trusted as it is."""
    async def go():
        p = await seeded(ledger, 0)
        before = await ledger.generation(p)
        await ledger.reserve(p, "a", 40, 100, UNLIMITED, False)
        await ledger.commit(p, "a", 40)
        missed = await ledger.seed(p, Usage(0, before), overwrite=True)
        stale = await ledger.reserve(p, "b", 70, 100, UNLIMITED, False)
        after = await ledger.generation(p)
        corrected = await ledger.seed(p, Usage(25, after), overwrite=True)  # 15 bytes went away at Glance
        fresh = await ledger.reserve(p, "c", 75, 100, UNLIMITED, False)
        return before, after, missed, stale, corrected, fresh
    before, after, missed, stale, corrected, fresh = run(go())
    assert after > before
    assert missed == 0 and (stale.bytes, stale.used) == (0, 40)
    assert corrected == -15 and (fresh.bytes, fresh.used) == (75, 25)


def test_a_decrease_frees_at_once_an_increase_counts_for_listings_under_way(ledger):
    async def go():
        p = await seeded(ledger, 90)
        await ledger.adjust(p, -60)  # a delete
        freed = await ledger.reserve(p, "a", 70, 100, UNLIMITED, False)
        await ledger.release(p, "a")
        before = await ledger.generation(p)
        await ledger.adjust(p, 50)  # a location added
        grown = await ledger.reserve(p, "b", 30, 100, UNLIMITED, False)
        await ledger.release(p, "b")
        await ledger.seed(p, Usage(30, before), overwrite=True)  # began before the new location
        listed = await ledger.reserve(p, "c", 30, 100, UNLIMITED, False)
        await ledger.adjust(p, -1000)
        return freed, grown, listed, await ledger.reserve(p, "d", 100, 100, UNLIMITED, False)
    freed, grown, listed, emptied = run(go())
    assert (freed.bytes, freed.used) == (70, 30)
    assert (grown.bytes, grown.used) == (0, 80)
    assert (listed.bytes, listed.used) == (0, 80)
    assert (emptied.bytes, emptied.used) == (100, 0)


def test_release_gives_the_bytes_back(ledger):
    async def go():
        p = await seeded(ledger)
        await ledger.reserve(p, "a", 100, 100, UNLIMITED, False)
        await ledger.release(p, "a")
        return await ledger.reserve(p, "b", 100, 100, UNLIMITED, False)
    assert run(go()).bytes == 100


def test_an_unrenewed_lease_runs_out_a_renewed_one_does_not(ledger):
    async def go():
        p = await seeded(ledger)
        await ledger.reserve(p, "dead", 50, 100, UNLIMITED, False)
        await ledger.reserve(p, "alive", 50, 100, UNLIMITED, False)
        deadline = time.monotonic() + 3 * LEASE
        while time.monotonic() < deadline:
            assert await ledger.renew(p, "alive")
            await asyncio.sleep(LEASE / 10)
        return (await ledger.renew(p, "dead"), await ledger.extend(p, "dead", 1, 100),
                await ledger.reserve(p, "new", 50, 100, UNLIMITED, False),
                await ledger.reserve(p, "more", 1, 100, UNLIMITED, False))
    renewed, extended, new, more = run(go())
    assert renewed is False and extended is None
    assert new.bytes == 50 and more.bytes == 0


def test_one_gateway_at_a_time_reconciles_a_project(redis_url):
    """Two replicas sharing Redis: the second one's claim fails until the first one's runs out."""
    async def go():
        a, b = (RedisLedger(redis_url, 1, LEASE, keep_commits_seconds=60) for _ in range(2))
        p = project()
        first, second = await a.claim(p, LEASE), await b.claim(p, LEASE)
        await asyncio.sleep(LEASE * 2)
        return first, second, await b.claim(p, LEASE)
    assert run(go()) == (True, False, True)
