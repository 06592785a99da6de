"""What the unit tests of the quota share: a real redis-server (no cloud), so
the same case runs on the memory ledger and on ledger.lua."""

from __future__ import annotations

import pytest

from policy.quota.ledger import MemoryLedger
from policy.quota.redis_ledger import RedisLedger
from tests.support.redis_server import RedisServer

@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis-ledger")).start()
    yield server.url
    server.stop()


@pytest.fixture(scope="module", params=["memory", "redis"])
def new_ledger(request):
    """Makes a ledger of each kind, on a long lease: a new one for each event
    loop (a Redis client is bound to the loop that made it). Module-scoped, so
    hypothesis can run many examples on one fixture."""
    if request.param == "memory":
        return lambda: MemoryLedger(30, keep_commits_seconds=600)
    url = request.getfixturevalue("redis_url")
    return lambda: RedisLedger(url, 1, 30, keep_commits_seconds=600)
