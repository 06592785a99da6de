"""What only the ledger replicas share does (policy/quota/redis_ledger.py), on
a real redis-server: one reconciling gateway at a time, every entry listed
for an operator, and Redis down failing closed (the contract both ledgers
keep is tests/unit/test_quota_ledger.py). Through Redis Sentinel (a primary,
two replicas and three sentinels on loopback, tests/support/redis_server.py)
when the primary dies: a commit retried onto the new primary counts once, and
a reservation no replica holds is refused (with gateways:
tests/stack/test_quota_sentinel.py)."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import pytest

from policy.config import UNLIMITED
from policy.exceptions import Unavailable
from policy.quota.ledger import Usage
from policy.quota.redis_ledger import RedisLedger
from tests.support.redis_server import RECOVERY_BOUND_SECONDS
from tests.support.stack import free_port

LEASE = 1.0


def run(coro):
    return asyncio.run(coro)


def project() -> str:
    return f"p-{uuid.uuid4()}"


def test_one_gateway_at_a_time_reconciles_a_project(redis_url):
    """Two replicas sharing Redis: the second one's claim fails until the first one's runs out."""
    async def go():
        a, b = (RedisLedger(redis_url, 1, LEASE, keep_commits_seconds=60) for _ in range(2))
        p = project()
        first, second = await a.claim(p, LEASE), await b.claim(p, LEASE)
        await asyncio.sleep(LEASE * 2)
        return first, second, await b.claim(p, LEASE)
    assert run(go()) == (True, False, True)


def test_every_seeded_entry_is_listed_for_an_operator(redis_url):
    async def go():
        ledger = RedisLedger(redis_url, 1, LEASE, keep_commits_seconds=60)
        p = project()
        try:
            for entry in (p, f"{p}/image_count_total"):
                await ledger.seed(entry, Usage(5, 0), overwrite=False)
            await ledger.reserve(f"{p}/image_count_uploading", "h", 1, UNLIMITED, partial=False)
            return p, await ledger.entries()
        finally:
            await ledger.close()
    p, entries = run(go())
    assert {p, f"{p}/image_count_total"} <= set(entries)
    assert f"{p}/image_count_uploading" not in entries  # holds only, never seeded


def test_redis_down_fails_closed():
    async def go():
        ledger = RedisLedger(f"redis://127.0.0.1:{free_port()}/0", 0.5, LEASE, keep_commits_seconds=60)
        try:
            assert not await ledger.ping()
            with pytest.raises(Unavailable) as e:
                await ledger.reserve(project(), "h", 1, 100, partial=False)
            return e.value
        finally:
            await ledger.close()
    down = run(go())
    assert down.dependency == "redis"


def test_a_commit_during_the_failover_lands_on_the_new_primary_once(sentinels):
    """The ledger alone: a hold reserved, the primary killed, the upload's
    commit made at once. It fails until a replica is promoted, is retried, and
    counts once on the new primary (a second commit finds no hold)."""
    doomed = sentinels.primary()

    async def go():
        ledger = RedisLedger(sentinels.url, 1, lease_seconds=30, keep_commits_seconds=60)
        p = f"p-{uuid.uuid4()}"
        await ledger.seed(p, Usage(0, await ledger.generation(p)), overwrite=False)
        assert (await ledger.reserve(p, "h", 100, 1000, partial=False)).bytes == 100
        doomed.proc.send_signal(signal.SIGKILL)
        started = time.monotonic()
        await ledger.commit(p, "h", 100)
        took = time.monotonic() - started
        await ledger.commit(p, "h", 100)
        after = await ledger.reserve(p, "i", 901, 1000, partial=False)
        await ledger.close()
        return p, took, after

    p, took, after = asyncio.run(go())
    new = sentinels.primary()
    print(f"\ncommitted {took:.1f} s after the primary was killed")
    assert new is not doomed
    assert new.cli("GET", f"glance-gate:quota:{{{p}}}:usage") == "100"
    assert (after.bytes, after.used) == (0, 100)


def test_a_reservation_no_replica_holds_is_refused_so_a_failover_cannot_lose_it(sentinels):
    """Replication lag made real: the replicas stopped and cut off from the
    primary's stream, a reservation of 900 of 1000 bytes, then the primary
    killed. With WAIT it is refused (without, it was granted, and the promoted
    replica granted the same 900 bytes again: 1800 of 1000); after the failover
    the room is whole, and granted once."""
    doomed = sentinels.primary()
    replicas = [r for r in sentinels.servers if r is not doomed]

    async def go():
        ledger = RedisLedger(sentinels.url, 1, lease_seconds=30, keep_commits_seconds=60)
        p = f"p-{uuid.uuid4()}"
        await ledger.seed(p, Usage(0, await ledger.generation(p)), overwrite=False)
        for replica in replicas:
            replica.proc.send_signal(signal.SIGSTOP)  # cannot reconnect
        try:
            doomed.cli("CLIENT", "KILL", "TYPE", "replica")  # the stream to them ends here
            with pytest.raises(Unavailable, match="no replica acknowledged"):
                await ledger.reserve(p, "a", 900, 1000, partial=False)
            doomed.proc.send_signal(signal.SIGKILL)
        finally:
            for replica in replicas:
                replica.proc.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + RECOVERY_BOUND_SECONDS
        while True:
            try:
                grant = await ledger.reserve(p, "b", 900, 1000, partial=False)
                break
            except Unavailable:
                assert time.monotonic() < deadline, "no new primary"
                await asyncio.sleep(0.1)
        await ledger.close()
        return grant

    grant = asyncio.run(go())
    assert sentinels.primary() is not doomed
    assert (grant.bytes, grant.used) == (900, 0)
