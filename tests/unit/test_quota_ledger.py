"""The two ledgers, one contract: the same cases against the in-memory ledger
and against ledger.lua in a real redis-server."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy.config import UNLIMITED
from policy.exceptions import Unseeded
from policy.quota.ledger import Grant, MemoryLedger, Usage
from policy.quota.redis_ledger import RedisLedger

LEASE = 1.0  # the renewed lease below renews ten times as often: a stalled loop or Redis has slack


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
            await ledger.reserve(p, "a", 10, 100, partial=False)
        unlimited = await ledger.reserve(p, "b", 10, UNLIMITED, partial=False)  # no limit: no usage needed
        first = await ledger.seed(p, Usage(30, 0), overwrite=False)
        again = await ledger.seed(p, Usage(99, 0), overwrite=False)  # a second cold reading changes nothing
        return unlimited, first, again, await ledger.reserve(p, "c", 70, 100, partial=False)
    unlimited, first, again, grant = run(go())
    assert unlimited.bytes == 10 and first is None and again == 0
    assert (grant.bytes, grant.used) == (0, 40)  # 30 stored, 10 held


def test_exact_reservations_never_pass_the_limit(ledger):
    async def go():
        p = await seeded(ledger, 30)
        first = await ledger.reserve(p, "a", 60, 100, partial=False)
        second = await ledger.reserve(p, "b", 20, 100, partial=False)
        return first, second
    first, second = run(go())
    assert (first.bytes, first.used) == (60, 30)
    assert (second.bytes, second.used, second.uploads) == (0, 90, 1)


def test_partial_reservation_grants_what_is_left(ledger):
    async def go():
        p = await seeded(ledger, 80)
        grant = await ledger.reserve(p, "a", 50, 100, partial=True)
        more = await ledger.extend(p, "a", 50, 100)
        return grant, more
    grant, more = run(go())
    assert grant.bytes == 20 and more.bytes == 0


def test_concurrent_reservations_are_atomic(ledger):
    """50 reservations of 10 bytes at once against a limit of 95: nine win."""
    async def go():
        p = await seeded(ledger)
        grants = await asyncio.gather(*(ledger.reserve(p, str(i), 10, 95, False)
                                        for i in range(50)))
        return [g.bytes for g in grants]
    assert sorted(run(go()), reverse=True)[:10] == [10] * 9 + [0]


def test_uploads_cap(ledger):
    """The uploads in flight are an entry of their own, one unit each, never committed."""
    async def go():
        p = await seeded(ledger)
        a = await ledger.reserve(p, "a", 1, 1, False)
        b = await ledger.reserve(p, "b", 1, 1, False)
        await ledger.release(p, "a")
        c = await ledger.reserve(p, "c", 1, 1, False)
        return a, b, c
    a, b, c = run(go())
    assert (a.bytes, b.bytes, b.uploads, c.bytes) == (1, 0, 1, 1)


def test_a_commit_is_usage_at_once(ledger):
    async def go():
        p = await seeded(ledger, 10)
        await ledger.reserve(p, "a", 40, 100, False)
        await ledger.commit(p, "a", 40)
        return await ledger.reserve(p, "b", 60, 100, False)
    grant = run(go())
    assert (grant.bytes, grant.used) == (0, 50)


def test_a_commit_counts_what_was_stored_not_what_was_granted_ahead(ledger):
    async def go():
        p = await seeded(ledger)
        await ledger.reserve(p, "a", 30, 100, partial=True)
        await ledger.extend(p, "a", 30, 100)  # 60 granted, 45 sent
        await ledger.commit(p, "a", 45)
        return await ledger.reserve(p, "b", 55, 100, False)
    grant = run(go())
    assert (grant.bytes, grant.used) == (55, 45)


def test_a_listing_under_way_counts_the_commits_it_may_miss(ledger):
    """The listing began before a commit and did not see it: the commit is added;
    one that began after it is trusted as it is."""
    async def go():
        p = await seeded(ledger, 0)
        before = await ledger.generation(p)
        await ledger.reserve(p, "a", 40, 100, False)
        await ledger.commit(p, "a", 40)
        missed = await ledger.seed(p, Usage(0, before), overwrite=True)
        stale = await ledger.reserve(p, "b", 70, 100, False)
        after = await ledger.generation(p)
        corrected = await ledger.seed(p, Usage(25, after), overwrite=True)  # 15 bytes went away at Glance
        fresh = await ledger.reserve(p, "c", 75, 100, False)
        return before, after, missed, stale, corrected, fresh
    before, after, missed, stale, corrected, fresh = run(go())
    assert after > before
    assert missed == 0 and (stale.bytes, stale.used) == (0, 40)
    assert corrected == -15 and (fresh.bytes, fresh.used) == (75, 25)


def test_a_decrease_frees_at_once_an_increase_counts_for_listings_under_way(ledger):
    async def go():
        p = await seeded(ledger, 90)
        await ledger.adjust(p, -60)  # a delete
        freed = await ledger.reserve(p, "a", 70, 100, False)
        await ledger.release(p, "a")
        before = await ledger.generation(p)
        await ledger.adjust(p, 50)  # a location added
        grown = await ledger.reserve(p, "b", 30, 100, False)
        await ledger.release(p, "b")
        await ledger.seed(p, Usage(30, before), overwrite=True)  # began before the new location
        listed = await ledger.reserve(p, "c", 30, 100, False)
        await ledger.adjust(p, -1000)
        return freed, grown, listed, await ledger.reserve(p, "d", 100, 100, False)
    freed, grown, listed, emptied = run(go())
    assert (freed.bytes, freed.used) == (70, 30)
    assert (grown.bytes, grown.used) == (0, 80)
    assert (listed.bytes, listed.used) == (0, 80)
    assert (emptied.bytes, emptied.used) == (100, 0)


def test_release_gives_the_bytes_back(ledger):
    async def go():
        p = await seeded(ledger)
        await ledger.reserve(p, "a", 100, 100, False)
        await ledger.release(p, "a")
        return await ledger.reserve(p, "b", 100, 100, False)
    assert run(go()).bytes == 100


def test_an_unrenewed_lease_runs_out_a_renewed_one_does_not(ledger):
    async def go():
        p = await seeded(ledger)
        await ledger.reserve(p, "dead", 50, 100, False)
        await ledger.reserve(p, "alive", 50, 100, False)
        deadline = time.monotonic() + 3 * LEASE
        while time.monotonic() < deadline:
            assert await ledger.renew(p, "alive")
            await asyncio.sleep(LEASE / 10)
        return (await ledger.renew(p, "dead"), await ledger.extend(p, "dead", 1, 100),
                await ledger.reserve(p, "new", 50, 100, False),
                await ledger.reserve(p, "more", 1, 100, False))
    renewed, extended, new, more = run(go())
    assert renewed is False and extended is None
    assert new.bytes == 50 and more.bytes == 0


def test_the_schedule_cuts_the_least_advanced_when_all_are_blocked_and_gives_room_to_the_furthest(ledger):
    """Uploads of unknown size (ledger.py's schedule): three into 100 bytes, each
    blocked at its grant's end. The least advanced is cut at once, and holds its
    bytes until its gateway releases them; no second cut meanwhile; then the
    furthest gets them."""
    async def go():
        p = await seeded(ledger)
        want = lambda h, streamed, blocked, first=False: ledger.want(p, h, 40, 100, streamed, blocked,  # noqa: E731
                                                                     60, first)
        starts = [await want(h, 0, True, first=True) for h in "abc"]
        ahead = await want("a", 30, False)  # not blocked yet: no room, no cut
        a, b = await want("a", 40, True), await want("b", 35, True)
        c = await want("c", 20, True)  # the last to block: all are
        again = await want("a", 40, True)  # c still holds its bytes: nothing to give, no second cut
        await ledger.release(p, "c")
        return starts, ahead, a, b, c, again, await want("a", 40, True), await want("b", 35, True)
    starts, ahead, a, b, c, again, a_after, b_after = run(go())
    assert [t.granted for t in starts] == [40, 40, 20]
    assert (ahead.granted, ahead.cut, a.cut, b.cut) == (40, False, False, False)
    assert (c.granted, c.cut, c.others) == (20, True, 80)
    assert (again.granted, again.cut) == (40, False)
    assert (a_after.granted, a_after.cut) == (60, False)
    assert (b_after.granted, b_after.cut) == (40, False)


def test_an_upload_alone_and_out_of_room_gives_way_at_once(ledger):
    async def go():
        p = await seeded(ledger, 100)
        turn = await ledger.want(p, "a", 40, 100, 0, True, 60, True)
        return turn, await ledger.read(p)
    turn, reading = run(go())
    assert (turn.granted, turn.cut, turn.others) == (0, True, 100)
    assert (reading.reserved, reading.holds) == (0, 0)


def test_a_blocked_upload_waits_while_the_others_move_and_gives_way_when_they_stall(ledger):
    """Another upload streaming (a declared size, here) is no deadlock: the
    blocked one waits. Its advances and a commit are moves; once nothing
    moved for wait_seconds, the blocked one is cut."""
    async def go():
        p = await seeded(ledger)
        await ledger.reserve(p, "declared", 60, 100, False)
        want = lambda streamed, first=False: ledger.want(p, "b", 40, 100, streamed, True, 0.5, first)  # noqa: E731
        first = await want(0, first=True)
        waiting = await want(40)
        await asyncio.sleep(0.3)
        await ledger.renew(p, "declared", 30)  # it advanced: a move
        await asyncio.sleep(0.3)
        moved = await want(40)
        await asyncio.sleep(0.6)
        return first, waiting, moved, await want(40)
    first, waiting, moved, stalled = run(go())
    assert first.granted == 40 and not waiting.cut and not moved.cut
    assert (stalled.granted, stalled.cut) == (40, True)


BYTES = st.integers(0, 2**50)  # a PiB: sums stay exact in Lua's doubles (2**53)


@settings(deadline=None)  # a real redis-server answers: under load, slower than the default 200 ms
@given(stored=BYTES, held=BYTES, amount=st.integers(1, 2**50), limit=st.just(UNLIMITED) | BYTES,
       partial=st.booleans())
def test_a_grant_is_what_fits_under_the_limit(new_ledger, stored, held, amount, limit, partial):
    """The quota rule itself, as each ledger applies it: usage and the other
    reservations plus the request within the limit (-1: none), else nothing,
    or with `partial` what room is left. Both ledgers, the same answer."""
    async def go():
        ledger = new_ledger()
        try:
            p = await seeded(ledger, stored)
            if held:
                await ledger.reserve(p, "other", held, UNLIMITED, partial=False)
            return await ledger.reserve(p, "this", amount, limit, partial)
        finally:
            await ledger.close()
    room = amount if limit == UNLIMITED else max(0, limit - stored - held)
    expected = min(amount, room) if partial else (amount if amount <= room else 0)
    assert run(go()) == Grant(expected, stored + held, 1 if held else 0)
