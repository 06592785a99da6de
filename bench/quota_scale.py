"""Quota at cloud scale: a small upload into projects of 10, 1,000 and 5,000
images, direct to Glance and through glance-gate, side by side in one run.

    .venv/bin/python bench/quota_scale.py [--images 10,1000,5000] [--samples 30] [--cold 5]

For each project size, a dedicated Keystone project is created and filled with
that many (queued) images directly at Glance, by the admin, `--workers`
concurrent POSTs at a time; projects and images are deleted at the end, so no
other project's usage changes. Two gateways run, started here on free ports,
both with a limit for every project (1 TiB, never reached) so every upload
takes the quota path: one with the memory ledger, one with the Redis ledger
(a redis-server of its own). Then, every project side by side:

- warm: `--samples` rounds, each of a 1,000-byte upload by the admin into
  every project, direct, through the memory gateway and through the Redis
  gateway, projects and targets in a rotating order, each into a new image
  created (and afterwards deleted) untimed;
  after three untimed rounds, the first of which seeds each gateway's usage
  of the project;
- cold: `--cold` rounds, each of a direct upload into every project and one
  through the Redis gateway right after the Redis ledger was emptied
  (FLUSHALL), so the decision has to list the project's images first;
- reconciliation: `HardQuota.reconcile` of the project, 3 times, run here with
  the gateway's own code (a listing at Glance, then the ledger's correction).

Wall time of each PUT, from the request to the 204, with a keep-alive client
per target. Prints a table, writes bench/results/quota_scale-<time>.json.
Needs the cloud-in-a-box (scripts/cloud up). Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from policy.config import Quota  # noqa: E402
from policy.glance import GlanceClient, TokenCredentials  # noqa: E402
from policy.quota.ledger import MemoryLedger  # noqa: E402
from policy.quota.limits import Limits  # noqa: E402
from policy.quota.reservations import KEEP_COMMITS_SECONDS, HardQuota  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402
from tests.support.stack import Stack, load_cloud, start_gateway, stop  # noqa: E402

TiB = 1 << 40
BODY = os.urandom(1000)
OCTET = {"Content-Type": "application/octet-stream"}
PREFIX = "bench-scale-"
ATTEMPTS = 3  # Glance's single gunicorn worker resets a keep-alive connection now and then


def retrying(fn):
    """fn() again on a reset connection: for calls that are safe to repeat."""
    for attempt in range(ATTEMPTS):
        try:
            return fn()
        except httpx.TransportError:
            if attempt == ATTEMPTS - 1:
                raise


class Cloud:
    """The admin's view: projects in Keystone, images in Glance."""

    def __init__(self, stack: Stack, workers: int):
        self.stack, self.workers = stack, workers
        self.token = stack.token("admin")
        self.auth = {"X-Auth-Token": self.token}
        self.glance = httpx.Client(base_url=stack.glance, headers=self.auth, timeout=60)

    def create_project(self, name: str) -> str:
        r = self.stack.http.post(f"{self.stack.keystone}/v3/projects", headers=self.auth,
                                 json={"project": {"name": name, "domain_id": "default"}})
        assert r.status_code == 201, r.text
        return r.json()["project"]["id"]

    def delete_project(self, project: str) -> None:
        r = self.stack.http.delete(f"{self.stack.keystone}/v3/projects/{project}", headers=self.auth)
        assert r.status_code == 204, r.text

    def leftovers(self) -> list[str]:
        """Projects an interrupted run of this benchmark left behind."""
        r = self.stack.http.get(f"{self.stack.keystone}/v3/projects", headers=self.auth)
        assert r.status_code == 200, r.text
        return [p["id"] for p in r.json()["projects"] if p["name"].startswith(PREFIX)]

    def create_image(self, project: str, client: httpx.Client | None = None) -> str:
        r = retrying(lambda: (client or self.glance).post("/v2/images", json={
            "name": f"scale-{time.monotonic_ns()}", "owner": project,
            "disk_format": "raw", "container_format": "bare"}))
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def delete_image(self, image_id: str, client: httpx.Client | None = None) -> None:
        r = retrying(lambda: (client or self.glance).delete(f"/v2/images/{image_id}"))
        assert r.status_code in (204, 404), r.text

    def _concurrently(self, fn, items) -> None:
        """fn(item, client) for every item, `workers` at a time, a client per worker."""
        clients = [httpx.Client(base_url=self.stack.glance, headers=self.auth, timeout=60)
                   for _ in range(self.workers)]
        with ThreadPoolExecutor(self.workers) as pool:
            list(pool.map(lambda pair: fn(pair[1], clients[pair[0] % self.workers]), enumerate(items)))
        for client in clients:
            client.close()

    def fill(self, project: str, count: int) -> None:
        self._concurrently(lambda _, client: self.create_image(project, client), range(count))

    def images(self, project: str) -> list[str]:
        ids, path = [], f"/v2/images?owner={project}&limit=1000"
        while path:
            r = retrying(lambda: self.glance.get(path))
            assert r.status_code == 200, r.text
            ids += [i["id"] for i in r.json()["images"]]
            path = r.json().get("next")
        return ids

    def empty(self, project: str) -> None:
        self._concurrently(self.delete_image, self.images(project))


RESETS: dict[str, int] = {}  # uploads repeated after a reset connection, by target


def upload(client: httpx.Client, image_id: str, token: str) -> float:
    """Seconds of the one attempt that got an answer."""
    for attempt in range(ATTEMPTS):
        started = time.perf_counter()
        try:
            r = client.put(f"/v2/images/{image_id}/file", content=BODY, headers={**OCTET, "X-Auth-Token": token})
        except httpx.TransportError:
            if attempt == ATTEMPTS - 1:
                raise
            RESETS[str(client.base_url)] = RESETS.get(str(client.base_url), 0) + 1
            continue
        took = time.perf_counter() - started
        assert r.status_code == 204, f"{client.base_url}: {r.status_code} {r.text}"
        return took
    raise AssertionError("unreachable")


def timed_upload(cloud: Cloud, project: str, client: httpx.Client) -> float:
    image_id = cloud.create_image(project)
    try:
        return upload(client, image_id, cloud.token)
    finally:
        cloud.delete_image(image_id)


def reconcile_seconds(cloud: Cloud, project: str, runs: int = 3) -> list[float]:
    async def go() -> list[float]:
        async def service_token() -> str:
            return cloud.token
        quota_conf = Quota(default_bytes=TiB)
        quota = HardQuota(quota_conf, Limits(quota_conf), GlanceClient(
            cloud.stack.glance, TokenCredentials(service_token), timeout=60),
            MemoryLedger(30, KEEP_COMMITS_SECONDS))
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            await quota.reconcile(project, 1)
            times.append(time.perf_counter() - started)
        return times
    return asyncio.run(go())


def summary(seconds: list[float]) -> dict:
    ms = sorted(s * 1000 for s in seconds)
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 1),
            "p90_ms": round(statistics.quantiles(ms, n=10)[8], 1) if len(ms) > 1 else round(ms[0], 1)}


TARGETS = ("direct", "memory", "redis")


def rotated(items: list, i: int) -> list:
    return items[i % len(items):] + items[:i % len(items)]


def measure(cloud: Cloud, projects: dict[int, str], clients: dict[str, httpx.Client], redis: RedisServer,
            samples: int, cold: int) -> dict:
    """Every project and target in each round, in a rotating order: all see
    the same moments of a shared machine."""
    timings = {n: {name: [] for name in TARGETS} for n in projects}
    for n, project in projects.items():
        for _ in range(3):  # seeds each gateway's usage of the project, warms connections up: untimed
            for name in TARGETS:
                timed_upload(cloud, project, clients[name])
    for i in range(samples):
        for n in rotated(list(projects), i):
            for name in rotated(list(TARGETS), i):
                timings[n][name].append(timed_upload(cloud, projects[n], clients[name]))
    cold_times = {n: {"direct": [], "redis": []} for n in projects}
    for i in range(cold):
        for n in rotated(list(projects), i):
            cold_times[n]["direct"].append(timed_upload(cloud, projects[n], clients["direct"]))
            redis.cli("FLUSHALL")
            cold_times[n]["redis"].append(timed_upload(cloud, projects[n], clients["redis"]))
    return {str(n): {"warm": {name: summary(t) for name, t in timings[n].items()},
                     "cold": {name: summary(t) for name, t in cold_times[n].items()},
                     "reconcile_s": [round(t, 3) for t in reconcile_seconds(cloud, projects[n])]}
            for n in projects}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="10,1000,5000", help="project sizes, comma-separated")
    parser.add_argument("--samples", type=int, default=30, help="warm rounds (each: every project, every target)")
    parser.add_argument("--cold", type=int, default=5, help="cold rounds (each: every project)")
    parser.add_argument("--workers", type=int, default=8, help="concurrent image creations/deletions")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.images.split(",")]
    try:
        stack = Stack(load_cloud())
    except RuntimeError as e:
        sys.exit(str(e))
    cloud = Cloud(stack, args.workers)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M")
    result = {"timestamp": stamp, "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "loadavg_at_start": os.getloadavg(), "cpus": os.cpu_count(), "upload_bytes": len(BODY),
              "fill_s": {}}
    settings = {"reconcile_seconds": 3600}  # no reconciliation during the measurements
    for project in cloud.leftovers():
        print(f"removing {project}, left by an earlier run ...", flush=True)
        cloud.empty(project)
        cloud.delete_project(project)
    out = REPO / "bench" / "results" / f"quota_scale-{stamp}.json"
    with tempfile.TemporaryDirectory(prefix="glance-gate-scale-") as tmp:
        redis = RedisServer(Path(tmp) / "redis").start()
        # Every project limited, so every upload takes the quota path.
        gateways = {"memory": start_gateway(Path(tmp), stack, default_bytes=TiB, quota_settings=settings),
                    "redis": start_gateway(Path(tmp), stack, default_bytes=TiB, quota_settings={
                        **settings, "ledger": "redis", "redis_url": redis.url})}
        clients = {"direct": httpx.Client(base_url=stack.glance, timeout=60),
                   **{name: httpx.Client(base_url=gw.url, timeout=60) for name, gw in gateways.items()}}
        try:
            projects: dict[int, str] = {}
            try:
                for n in sizes:
                    projects[n] = cloud.create_project(f"{PREFIX}{n}-{time.time_ns()}")
                    started = time.monotonic()
                    cloud.fill(projects[n], n)
                    result["fill_s"][str(n)] = round(time.monotonic() - started, 1)
                    print(f"{n} images: created in {result['fill_s'][str(n)]} s", flush=True)
                print("measuring ...", flush=True)
                result["projects"] = measure(cloud, projects, clients, redis, args.samples, args.cold)
                result["resets"] = RESETS
            finally:
                for project in projects.values():
                    cloud.empty(project)
                    cloud.delete_project(project)
        finally:
            for gw in gateways.values():
                stop(gw.proc)
            redis.stop()
    result["loadavg_at_end"] = os.getloadavg()
    report(result, sizes)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def report(result: dict, sizes: list[int]) -> None:
    rows = result["projects"]
    print(f"\n1,000-byte uploads (ms, p50 / p90); {result['cpus']} cores shared, "
          f"load {result['loadavg_at_start'][0]:.2f} at start")
    print(f"{'images':>7} | {'direct':>13} | {'gw memory':>13} | {'gw redis':>13} | {'added p50':>9} | "
          f"{'cold direct':>13} | {'cold gw redis':>13} | {'reconcile':>9} | {'per 1k img':>10}")
    for n in sizes:
        r = rows[str(n)]
        w, c = r["warm"], r["cold"]
        pair = lambda s: f"{s['p50_ms']:6.1f}/{s['p90_ms']:6.1f}"  # noqa: E731
        rec = statistics.median(r["reconcile_s"])
        print(f"{n:>7} | {pair(w['direct'])} | {pair(w['memory'])} | {pair(w['redis'])} | "
              f"{w['memory']['p50_ms'] - w['direct']['p50_ms']:9.1f} | {pair(c['direct'])} | {pair(c['redis'])} | "
              f"{rec * 1000:7.0f}ms | {rec * 1000 / max(n, 1) * 1000:8.0f}ms")
    first, last = rows[str(sizes[0])]["warm"], rows[str(sizes[-1])]["warm"]
    for name in TARGETS:
        ratio = last[name]["p50_ms"] / first[name]["p50_ms"]
        result.setdefault("ratios", {})[f"warm_{name}_{sizes[-1]}_vs_{sizes[0]}"] = round(ratio, 3)
        where = "direct to Glance" if name == "direct" else f"through the {name} gateway"
        print(f"warm {where}, {sizes[-1]} vs {sizes[0]} images (p50): {ratio:.3f}x")
    if result["resets"]:
        print(f"uploads repeated after a reset connection: {result['resets']}")


if __name__ == "__main__":
    sys.exit(main())
