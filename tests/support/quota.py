"""The hard quota's end-to-end tests share these: projQ's usage as Glance and
the shared ledger hold it, gateways with a quota, and bodies that are chunked,
held back, or sent from a thread."""

from __future__ import annotations

import os
import random
import threading
import time

import httpx

from tests.support.api import put
from tests.support.redis_server import RedisServer
from tests.support.stack import Gateway, Stack, at_once, start_gateway

MiB = 1024 * 1024
LEASE = 3  # seconds, in the tests that watch a lease run out


def glance_usage(stack: Stack, project: str) -> int:
    """What the project stores, as Glance's own image_size_total counts it, to the byte."""
    return stack.glance_usage(project)[project][0]


def ledger_usage(server: RedisServer, project: str) -> int | None:
    """The usage the gateways' shared ledger holds for the project; None when it holds none."""
    held = server.cli("GET", f"glance-gate:quota:{{{project}}}:usage")
    return int(held) if held else None


def assert_usage(stack: Stack, project: str, expected: int, server: RedisServer | None = None) -> None:
    """Glance stores `expected` bytes for the project, by its own count, and the
    ledger (when the gateways share one) holds exactly that: a reservation is
    settled just after its answer reached the client, so the ledger is given a
    few seconds to show it."""
    assert glance_usage(stack, project) == expected
    if server is not None:
        deadline = time.monotonic() + 10
        while (held := ledger_usage(server, project)) != expected and time.monotonic() < deadline:
            time.sleep(0.1)
        assert held == expected, f"the ledger holds {held} bytes for {project}, Glance stores {expected}"


def quota_gateway(tmp, stack, project, limit, ledger=None, gateway_settings=None, upstream=None,
                  **settings) -> Gateway:
    """A gateway with `limit` bytes for `project`, 1 MiB reservation steps, short
    leases, on `ledger` (a RedisServer) or on its own memory ledger."""
    quota_settings = {"chunk_bytes": MiB, "lease_seconds": LEASE, **settings}
    if ledger:
        quota_settings.update(ledger="redis", redis_url=ledger.url)
    return start_gateway(tmp, stack, quota={project: limit}, quota_settings=quota_settings,
                         gateway_settings=gateway_settings, upstream=upstream)


def chunks(size: int, part: int = 64 * 1024):
    for offset in range(0, size, part):
        yield os.urandom(min(part, size - offset))


class Slow:
    """A chunked body that sends `first` bytes, then waits for `go` before the rest."""

    def __init__(self, first: int, rest: int):
        self.first, self.rest, self.go = first, rest, threading.Event()

    def __iter__(self):
        yield from chunks(self.first)
        assert self.go.wait(60)
        yield from chunks(self.rest)


def wait_saving(stack: Stack, image_id: str) -> None:
    """Until Glance stores the upload's data: the gateway has reserved and forwarded it."""
    deadline = time.monotonic() + 30
    while stack.image(image_id)["status"] != "saving":
        assert time.monotonic() < deadline, "the upload never reached Glance"
        time.sleep(0.05)


def in_thread(fn, *args):
    result: dict = {}

    def run():
        try:
            result["response"] = fn(*args)
        except httpx.HTTPError as e:
            result["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def system_token(stack: Stack) -> str:
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "password": stack.user("admin")["password"], "domain": {"name": "Default"}}}},
        "scope": {"system": {"all": True}}}}
    r = stack.http.post(f"{stack.keystone}/v3/auth/tokens?nocatalog", json=body)
    assert r.status_code == 201, r.text
    return r.headers["X-Subject-Token"]


class UploadRace:
    """24 uploads of projQ at once, 2.4x a 10 MiB quota in all, every other one
    chunked, dealt round-robin over the gateways (the sizes drawn from `seed`)."""

    QUOTA = 10 * MiB

    def __init__(self, stack: Stack, seed: int):
        rng = random.Random(seed)
        self.sizes = [rng.randrange(MiB // 2, 3 * MiB // 2) for _ in range(24)]
        self.token = stack.token("userQ")
        self.images = [stack.create_image(user="userQ") for _ in self.sizes]

    def upload(self, gw: Gateway, i: int) -> int:
        body = chunks(self.sizes[i]) if i % 2 else os.urandom(self.sizes[i])
        with httpx.Client(base_url=gw.url, timeout=120) as client:
            return put(client, self.images[i], self.token, body).status_code

    def run(self, gateways: list[Gateway], first: int = 0) -> list[int]:
        """The statuses of uploads first.. (those before it are the test's own)."""
        return at_once(gateways, self.upload, range(first, len(self.sizes)))
