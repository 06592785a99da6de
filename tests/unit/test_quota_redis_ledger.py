"""What only the ledger replicas share does (policy/quota/redis_ledger.py), on
a real redis-server: one reconciling gateway at a time, every entry listed
for an operator, and Redis down failing closed (the contract both ledgers
keep is tests/unit/test_quota_ledger.py)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from policy.config import UNLIMITED
from policy.exceptions import Unavailable
from policy.quota.ledger import Usage
from policy.quota.redis_ledger import RedisLedger
from tests.stack import free_port

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
                await ledger.reserve(project(), "h", 1, 100, UNLIMITED, partial=False)
            return e.value
        finally:
            await ledger.close()
    down = run(go())
    assert down.dependency == "redis"
