"""`glance-gate usage` (policy/quota/operator.py): what the shared ledger
holds for a project, one line per resource, exact figures; and a refusal to
run on the memory ledger, which no command can reach."""

from __future__ import annotations

import asyncio
import uuid

from policy.config import UNLIMITED
from policy.quota.ledger import Usage
from policy.quota.operator import run
from policy.quota.redis_ledger import RedisLedger
from tests.support.fakes import config


def test_it_needs_the_shared_ledger():
    lines: list[str] = []
    assert asyncio.run(run(config(100), "usage", [], lines.append)) == 2
    assert lines and 'needs quota.ledger = "redis"' in lines[0]


def test_usage_shows_each_resource_of_a_project(redis_url):
    p = f"p-{uuid.uuid4()}"

    async def go():
        ledger = RedisLedger(redis_url, 1, 30, keep_commits_seconds=600)
        await ledger.seed(p, Usage(40, 0), overwrite=False)
        await ledger.reserve(p, "h", 25, 100, partial=False)
        await ledger.reserve(f"{p}/image_count_uploading", "h", 1, UNLIMITED, partial=False)
        await ledger.close()
        lines: list[str] = []
        status = await run(config(100, ledger="redis", redis_url=redis_url, max_images=3), "usage", [p],
                           lines.append)
        return status, lines
    status, lines = asyncio.run(go())
    rows = [line.split() for line in lines]
    assert status == 0 and rows[0] == ["project", "resource", "usage", "reserved", "in_flight", "limit"]
    assert rows[1:] == [[p, "image_size_total", "40", "25", "1", "100"],
                        [p, "image_stage_total", "-", "0", "0", "100"],  # not seeded: "-"
                        [p, "image_count_total", "-", "0", "0", "3"],
                        [p, "image_count_uploading", "1", "-", "1", "unlimited"]]
