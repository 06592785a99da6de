"""The Redis ledger through Redis Sentinel, against the real stack: a primary,
two replicas and three sentinels (Debian's redis-sentinel) on loopback, two
gateways on `redis+sentinel://`. The primary is killed during a race of
uploads: the gateways follow the new primary, uploads get 503 meanwhile and
204 again after, and nothing passes the limit, then or later."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from policy.config import UNLIMITED
from policy.exceptions import Unavailable
from policy.quota.ledger import Usage
from policy.quota.redis_ledger import RedisLedger
from tests.support.redis_server import SentinelGroup
from tests.support.api import assert_refusal, put
from tests.support.quota import MiB, chunks, glance_usage
from tests.support.stack import Stack, all_running, start_gateway, wait_until

QUOTA = 10 * MiB
# The bound README states for uploads to be answered 204 again after the
# primary dies: Sentinel's down-after-milliseconds, its election and
# promotion, and a gateway's next connection asking the sentinels.
RECOVERY_BOUND_SECONDS = SentinelGroup.DOWN_AFTER_MS / 1000 + 10


@pytest.fixture
def sentinels(tmp_path):
    group = SentinelGroup(tmp_path / "sentinel").start()
    yield group
    group.stop()


def throttled(size: int, seconds: float):
    """A body that takes about `seconds` to send: in flight across the failover."""
    parts = list(chunks(size))
    for part in parts:
        time.sleep(seconds / len(parts))
        yield part


def test_a_failover_loses_nothing_and_uploads_resume(stack: Stack, projQ, tmp_path, sentinels):
    """A first wave of uploads reserves most of the quota and streams for 15 s
    (three: Glance's four threads must keep one for the gateways' lookups); the
    primary is killed once they are reserved. Probes (another project) measure
    when both gateways answer 204 again; then a second wave, 0.8x the quota,
    races for the rest while the first still streams: had the new primary lost
    the first wave's reservations, it would let the second through."""
    probe_project = stack.user("userB")["project_id"]
    with all_running(start_gateway(tmp_path, stack, quota={projQ: QUOTA, probe_project: 1024 ** 4},
                                   quota_settings={"ledger": "redis", "redis_url": sentinels.url, "chunk_bytes": MiB})
                     for _ in range(2)) as gateways:
        sizes = [3 * MiB, 3 * MiB, 7 * MiB // 2] + [MiB] * 8
        first = 3
        token, probe_token = stack.token("userQ"), stack.token("userB")
        images = [stack.create_image(user="userQ") for _ in sizes]
        probes = [stack.create_image(user="userB") for _ in range(120)]
        doomed = sentinels.primary()
        # Tokens cached and both projects' usage seeded: the decisions are the ledger's alone.
        warm = [stack.create_image(user="userQ") for _ in gateways]
        for gw, image_id, probe_id in zip(gateways, warm, probes[-2:]):
            client = httpx.Client(base_url=gw.url, timeout=60)
            assert put(client, image_id, token, b"w" * 1000).status_code == 204
            assert put(client, probe_id, probe_token, b"p" * 1000).status_code == 204

        def upload(i: int) -> int:
            # The first wave declares its sizes (Content-Length); the second, half chunked.
            body = throttled(sizes[i], 15) if i < first else os.urandom(sizes[i])
            headers = {} if i >= first and i % 2 else {"Content-Length": str(sizes[i])}
            with httpx.Client(base_url=gateways[i % 2].url, timeout=120) as client:
                return put(client, images[i], token, body, headers=headers).status_code

        with ThreadPoolExecutor(len(sizes)) as pool:
            started = time.monotonic()
            waves = [pool.submit(upload, i) for i in range(first)]
            wait_until(lambda: sum(gw.metric("glance_gate_uploads_in_flight") for gw in gateways) == first,
                       "the first wave never streamed")
            doomed.proc.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            # Probes, alternating gateways, until each has answered 204.
            answers: list[tuple[float, int, int]] = []
            clients = [httpx.Client(base_url=gw.url, timeout=30) for gw in gateways]
            for n, image_id in enumerate(probes[:-2]):
                status = put(clients[n % 2], image_id, probe_token, b"p" * 1000).status_code
                answers.append((time.monotonic() - killed, n % 2, status))
                if {g for _, g, s in answers if s == 204} == {0, 1}:
                    break
                assert time.monotonic() - killed < RECOVERY_BOUND_SECONDS, answers
                time.sleep(0.1)
            streaming = sum(not f.done() for f in waves)
            waves += [pool.submit(upload, i) for i in range(first, len(sizes))]
            statuses = [f.result() for f in waves]
        recovered = max(min(t for t, g, s in answers if g == gw and s == 204) for gw in (0, 1))
        refused = [t for t, _, s in answers if s == 503]
        accepted = 1000 * len(warm) + sum(size for size, status in zip(sizes, statuses) if status == 204)
        print(f"\nprimary killed {killed - started:.1f} s into the first wave: "
              f"both gateways answer 204 again after {recovered:.1f} s "
              f"(503 to {len(refused)} probes meanwhile, the last at {max(refused, default=0):.1f} s); "
              f"{streaming} of the first wave still streaming then. First wave: {statuses[:first]}, "
              f"second: {statuses[first:]}; accepted {accepted} of quota {QUOTA} bytes = {accepted / QUOTA:.3f}")
        assert {s for _, _, s in answers} <= {204, 503}, answers
        assert streaming == first, "the first wave ended before the failover did: nothing was raced"
        assert statuses[:first] == [204] * first
        assert set(statuses[first:]) <= {204, 413}, statuses
        assert accepted <= QUOTA
        assert glance_usage(stack, projQ) == accepted

        # The gateways follow the new primary, which holds every commit.
        new = wait_until(lambda: (p := sentinels.primary()) is not doomed and p, "no new primary")
        key = f"glance-gate:quota:{{{projQ}}}:usage"
        wait_until(lambda: new.cli("GET", key) == str(accepted), f"the new primary's usage is not {accepted}")
    for image_id, status in zip(images, statuses):
        if status != 204:
            stack.assert_untouched(image_id, cut=True)


def test_no_replica_to_acknowledge_fails_closed(stack: Stack, projQ, tmp_path, sentinels):
    """With no replica acknowledging a write, an upload gets 503 (a failover
    could lose its reservation), and 204 once one does again."""
    with start_gateway(tmp_path, stack, quota={projQ: QUOTA},
                       quota_settings={"ledger": "redis", "redis_url": sentinels.url}) as gw:
        token = stack.token("userQ")
        primary = sentinels.primary()
        replicas = [s for s in sentinels.servers if s is not primary]
        client = httpx.Client(base_url=gw.url, timeout=60)
        assert put(client, stack.create_image(user="userQ"), token).status_code == 204
        for replica in replicas:
            replica.proc.send_signal(signal.SIGSTOP)  # connected, but acknowledging nothing
        try:
            image_id = stack.create_image(user="userQ")
            assert_refusal(put(client, image_id, token), 503, "replica")
            stack.assert_untouched(image_id)
            wait_until(lambda: 'glance_gate_dependency_up{dependency="redis"} 0.0'
                       in httpx.get(gw.metrics_url).text, "the probe never saw the ledger down")
        finally:
            for replica in replicas:
                replica.proc.send_signal(signal.SIGCONT)
        assert put(client, image_id, token).status_code == 204


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
