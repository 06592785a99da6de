"""The Redis ledger alone through Redis Sentinel (a primary, two replicas and
three sentinels on loopback, tests/support/redis_server.py) when the primary
dies: a commit retried onto the new primary counts once, and a reservation no
replica holds is refused. With gateways: tests/stack/test_quota_sentinel.py."""

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


def test_a_commit_during_the_failover_lands_on_the_new_primary_once(sentinels):
    """The ledger alone: a hold reserved, the primary killed, the upload's
    commit made at once. It fails until a replica is promoted, is retried, and
    counts once on the new primary (a second commit finds no hold)."""
    doomed = sentinels.primary()

    async def go():
        ledger = RedisLedger(sentinels.url, 1, lease_seconds=30, keep_commits_seconds=60)
        p = f"p-{uuid.uuid4()}"
        await ledger.seed(p, Usage(0, await ledger.generation(p)), overwrite=False)
        assert (await ledger.reserve(p, "h", 100, 1000, UNLIMITED, partial=False)).bytes == 100
        doomed.proc.send_signal(signal.SIGKILL)
        started = time.monotonic()
        await ledger.commit(p, "h", 100)
        took = time.monotonic() - started
        await ledger.commit(p, "h", 100)
        after = await ledger.reserve(p, "i", 901, 1000, UNLIMITED, partial=False)
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
                await ledger.reserve(p, "a", 900, 1000, UNLIMITED, partial=False)
            doomed.proc.send_signal(signal.SIGKILL)
        finally:
            for replica in replicas:
                replica.proc.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + RECOVERY_BOUND_SECONDS
        while True:
            try:
                grant = await ledger.reserve(p, "b", 900, 1000, UNLIMITED, partial=False)
                break
            except Unavailable:
                assert time.monotonic() < deadline, "no new primary"
                await asyncio.sleep(0.1)
        await ledger.close()
        return grant

    grant = asyncio.run(go())
    assert sentinels.primary() is not doomed
    assert (grant.bytes, grant.used) == (900, 0)
