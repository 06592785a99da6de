"""Latency of the quota ledger's reserve and commit: in-memory vs Redis, side by side.

    .venv/bin/python bench/quota.py [--ops 2000] [--redis-url redis://127.0.0.1:16379/0 | --sentinel]

Each op is one reserve of a Content-Length upload (the atomic check against
the usage the ledger holds + reservations) then its commit, awaited one after
the other on one asyncio loop, as the gateway does them. The project keeps
every commit in its log for the ledger's 10 minutes (for listings under way).
Without --redis-url a
redis-server (Debian's package, scripts/deps) is started on a free loopback
port and stopped at the end. With --sentinel, a primary, two replicas and
three sentinels instead (tests/support/redis_server.py), and the Redis ledger on that
primary directly and through Sentinel (each write then waits for a replica's
acknowledgement), side by side. Prints median, p90 and p99 in microseconds.
Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policy.quota.ledger import Ledger, MemoryLedger, Usage  # noqa: E402
from policy.quota.redis_ledger import RedisLedger  # noqa: E402
from policy.quota.reservations import KEEP_COMMITS_SECONDS  # noqa: E402
from tests.support.redis_server import RedisServer, SentinelGroup  # noqa: E402


async def measure(ledger: Ledger, ops: int) -> dict[str, list[float]]:
    project = f"bench-{time.time_ns()}"
    await ledger.seed(project, Usage(0, 0), overwrite=False)
    timings: dict[str, list[float]] = {"reserve": [], "commit": []}
    for i in range(ops):
        t0 = time.perf_counter()
        grant = await ledger.reserve(project, f"h{i}", 1024, 1 << 50, partial=False)
        t1 = time.perf_counter()
        await ledger.commit(project, f"h{i}", 1024)
        t2 = time.perf_counter()
        assert grant.bytes == 1024
        if i >= ops // 10:  # the first tenth warms up
            timings["reserve"].append((t1 - t0) * 1e6)
            timings["commit"].append((t2 - t1) * 1e6)
    await ledger.close()
    return timings


def quantiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=100)
    return statistics.median(values), q[89], q[98]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--redis-url")
    parser.add_argument("--sentinel", action="store_true")
    args = parser.parse_args()
    server = None
    if args.sentinel:
        server = SentinelGroup(Path(tempfile.mkdtemp(prefix="bench-sentinel-"))).start()
        url = server.primary().url
    else:
        if not args.redis_url:
            server = RedisServer(Path(tempfile.mkdtemp(prefix="bench-redis-"))).start()
        url = args.redis_url or server.url
    try:
        results = {
            "memory": asyncio.run(measure(MemoryLedger(30, KEEP_COMMITS_SECONDS), args.ops)),
            "redis": asyncio.run(measure(RedisLedger(url, 1, 30, KEEP_COMMITS_SECONDS), args.ops)),
        }
        if args.sentinel:
            results["sentinel"] = asyncio.run(measure(RedisLedger(server.url, 1, 30, KEEP_COMMITS_SECONDS), args.ops))
    finally:
        if server:
            server.stop()
    print(f"{args.ops} reserve+commit pairs, one after the other (µs)")
    print(f"{'op':<8} {'ledger':<8} {'median':>8} {'p90':>8} {'p99':>8}")
    for op in ("reserve", "commit"):
        for name, timings in results.items():
            print(f"{op:<8} {name:<8} " + " ".join(f"{v:8.1f}" for v in quantiles(timings[op])))


if __name__ == "__main__":
    main()
