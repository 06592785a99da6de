"""The Redis ledger through Redis Sentinel, against the real stack: a primary,
two replicas and three sentinels (Debian's redis-sentinel) on loopback, two
gateways on `redis+sentinel://`. The primary is killed during a race of
uploads: the gateways follow the new primary, uploads get 503 meanwhile and
204 again after, and nothing passes the limit, then or later. The ledger
alone through a failover: tests/unit/test_quota_redis_ledger.py."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.support.redis_server import RECOVERY_BOUND_SECONDS
from tests.support.api import assert_refusal, put
from tests.support.quota import MiB, chunks, glance_usage
from tests.support.stack import Stack, all_running, start_gateway, wait_until

QUOTA = 10 * MiB


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
