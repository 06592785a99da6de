"""Concurrent chunked uploads of unknown size into a quota with room for some
of them, over two gateways sharing one Redis: how much of the room is accepted.

    .venv/bin/python bench/quota_race.py [--uploads 8] [--size-mib 7] [--room-mib 40]
                                         [--chunk-mib 8] [--runs 3] [--wait 5,0] [--before REV]

Issue 19's race: 8 uploads of 7 MiB, chunked with no declared size, at once,
into 40 MiB of free quota (room for five), half through each gateway. For each
`--wait` (quota.wait_seconds; 0: an upload out of room is refused or cut at
once), `--runs` rounds, side by side in one run, alternating; with `--before
REV`, each round also with the gateway's code at git revision REV (its
addons/ and policy/ put first on the gateways' PYTHONPATH). projQ's images
are deleted first, so its usage is 0 and the room is the limit. Prints
accepted/room per round and writes bench/results/quota_race-<time>.json.
Needs the cloud-in-a-box (scripts/cloud up). Figures only: nothing is asserted
except that no round accepts a byte over the limit.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.support.redis_server import RedisServer  # noqa: E402
from tests.support.stack import Stack, load_cloud, start_gateway, stop  # noqa: E402

MiB = 1024 * 1024
PART = 64 * 1024


def body(size: int):
    data = os.urandom(PART)
    for offset in range(0, size, PART):
        yield data[: min(PART, size - offset)]


def empty_project(stack: Stack, project: str) -> None:
    token = stack.token("admin")
    images = stack.http.get(f"{stack.glance}/v2/images", params={"owner": project, "limit": 1000},
                            headers={"X-Auth-Token": token}).json()["images"]
    for image in images:
        stack.delete_image(image["id"], user="admin")


def round_(stack: Stack, gateways, project: str, args) -> dict:
    empty_project(stack, project)
    token = stack.token("userQ")
    images = [stack.create_image(user="userQ") for _ in range(args.uploads)]
    size = args.size_mib * MiB

    def upload(i: int) -> int:
        with httpx.Client(base_url=gateways[i % 2].url, timeout=300) as client:
            return client.put(f"/v2/images/{images[i]}/file", content=body(size),
                              headers={"X-Auth-Token": token, "Content-Type": "application/octet-stream"}
                              ).status_code

    started = time.monotonic()
    with ThreadPoolExecutor(args.uploads) as pool:
        statuses = list(pool.map(upload, range(args.uploads)))
    took = time.monotonic() - started
    accepted = statuses.count(204) * size
    room = args.room_mib * MiB
    assert accepted <= room, f"{accepted} bytes accepted over a limit of {room}"
    return {"statuses": statuses, "accepted_bytes": accepted, "room_bytes": room,
            "accepted_over_room": accepted / room, "seconds": round(took, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=8)
    parser.add_argument("--size-mib", type=int, default=7)
    parser.add_argument("--room-mib", type=int, default=40)
    parser.add_argument("--chunk-mib", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--wait", default="5,0",
                        help="quota.wait_seconds values, compared side by side; `none`: the key unset (a tree before it)")
    parser.add_argument("--before", help="also race the gateway's code at this git revision, side by side")
    args = parser.parse_args()
    stack = Stack(load_cloud())
    project = stack.user("userQ")["project_id"]
    waits = [None if w == "none" else float(w) for w in args.wait.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        trees: dict[str, str | None] = {"now": None}
        if args.before:
            old = Path(tmp) / "before"
            old.mkdir()
            archive = subprocess.run(["git", "archive", args.before, "addons", "policy"], cwd=REPO,
                                     check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
            trees[args.before] = str(old)
        variants = [(tree, wait) for tree in trees for wait in waits]
        name = lambda tree, wait: f"{tree} wait_seconds={wait}"  # noqa: E731
        results: dict[str, list] = {name(*v): [] for v in variants}
        redis = RedisServer(Path(tmp) / "redis").start()
        try:
            for run in range(args.runs):
                for tree, wait in variants:
                    redis.cli("FLUSHALL")
                    settings = {"ledger": "redis", "redis_url": redis.url, "chunk_bytes": args.chunk_mib * MiB,
                                **({} if wait is None else {"wait_seconds": wait})}
                    os.environ.pop("PYTHONPATH", None)
                    if trees[tree]:
                        os.environ["PYTHONPATH"] = trees[tree]
                    gateways = [start_gateway(Path(tmp), stack, quota={project: args.room_mib * MiB},
                                              quota_settings=settings) for _ in range(2)]
                    try:
                        result = round_(stack, gateways, project, args)
                    finally:
                        for gw in gateways:
                            stop(gw.proc)
                    results[name(tree, wait)].append(result)
                    print(f"run {run + 1} {name(tree, wait)}: accepted {result['accepted_bytes'] // MiB} MiB "
                          f"of {args.room_mib} MiB room = {result['accepted_over_room']:.3f} "
                          f"({result['statuses'].count(204)} x 204, {result['statuses'].count(413)} x 413) "
                          f"in {result['seconds']} s", flush=True)
        finally:
            redis.stop()
            empty_project(stack, project)
    for variant, rounds in results.items():
        ratios = [r["accepted_over_room"] for r in rounds]
        print(f"{variant}: accepted/room {', '.join(f'{x:.3f}' for x in ratios)}; min {min(ratios):.3f}")
    out = REPO / "bench" / "results" / f"quota_race-{datetime.datetime.now(datetime.UTC):%Y-%m-%dT%H%M}.json"
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
