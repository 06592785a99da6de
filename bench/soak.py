"""Bounded soak of glance-gate against the cloud-in-a-box, on loopback.

    .venv/bin/python bench/soak.py --minutes 30 [--clients 6] [--check]

Starts one gateway (projB's quota set to what projB already stores, so any
projB upload is a 413) and runs `--clients` threads for `--minutes`, each
cycling through a fixed mix, all through the gateway:

- API calls: create an image, show it, list images, version discovery, delete;
- uploads: 64 KiB and 3 MiB bodies (204), each image downloaded again (200)
  and deleted, so the store stays small;
- refusals: a bad token (401), projB over its quota (413), a text/plain body
  (415), a non-UUID image id (400).

Every few seconds it samples the gateway's RSS (VmRSS) and open file
descriptors (/proc/<pid>/fd), of the supervisor and its workers together. Reports requests by status, unexpected answers
and client errors, RSS growth (median of the first window after warm-up vs the
last window), fds (idle before, first/last/max under load, idle after), and
whether the gateway's own request counter saw every request; writes
bench/results/soak-latest.json.

--check exits 1 only on hard failures: an unexpected status or a client
error, the gateway dying, more than --fd-slack fds left open once idle
again, or the gateway's request counter missing a request. RSS growth and rates are figures, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.upload import MiB, children, gateway_rss_mib, machine  # noqa: E402
from tests.support.stack import Stack, load_cloud, start_gateway, stop  # noqa: E402

DATA = os.urandom(3 * MiB)
SMALL, LARGE = 64 * 1024, 3 * MiB
OCTET = {"Content-Type": "application/octet-stream"}
MAX_REQUESTS = 1_000_000  # a bound besides time, never reached at this load


def open_fds(pid: int) -> int:
    """Of the gateway: the supervisor and its workers."""
    total = 0
    for p in [pid, *children(pid)]:
        with contextlib.suppress(FileNotFoundError):  # a worker that just exited
            total += len(os.listdir(f"/proc/{p}/fd"))
    return total


class Client(threading.Thread):
    """One client cycling through the mix until the deadline."""

    def __init__(self, soak: Soak, n: int):
        super().__init__(name=f"client-{n}", daemon=True)
        self.soak, self.n = soak, n
        stack = soak.stack
        self.a, self.b = stack.token("userA"), stack.token("userB")
        self.http = httpx.Client(base_url=soak.gw.url, timeout=60)
        self.full_b = stack.create_image(user="userB")  # never filled: projB has no room left
        self.queued = stack.create_image()  # refusals aim here; it stays queued

    def call(self, action: str, expected: int, method: str, url: str, token: str | None = None,
             **kw) -> httpx.Response | None:
        headers = {**({"X-Auth-Token": token} if token else {}), **kw.pop("headers", {})}
        try:
            r = self.http.request(method, url, headers=headers, **kw)
        except httpx.HTTPError as e:
            self.soak.record(action, None, expected, f"{type(e).__name__}: {e}")
            return None
        self.soak.record(action, r.status_code, expected, r.text[:200])
        return r if r.status_code == expected else None

    def cycle(self, i: int) -> None:
        size = LARGE if i % 4 == 0 else SMALL  # every fourth upload is a few MiB
        r = self.call("create", 201, "POST", "/v2/images", self.a,
                      json={"name": f"soak-{self.n}-{i}", "disk_format": "raw", "container_format": "bare"})
        if r is None:
            return
        image_id = r.json()["id"]
        self.call("upload", 204, "PUT", f"/v2/images/{image_id}/file", self.a, headers=OCTET, content=DATA[:size])
        r = self.call("download", 200, "GET", f"/v2/images/{image_id}/file", self.a)
        if r is not None and r.content != DATA[:size]:
            self.soak.fail("download", f"{len(r.content)} bytes, not the {size} uploaded")
        self.call("show", 200, "GET", f"/v2/images/{image_id}", self.a)
        self.call("list", 200, "GET", "/v2/images?limit=5", self.a)
        self.call("versions", 200, "GET", "/versions")
        self.call("bad_token", 401, "PUT", f"/v2/images/{self.queued}/file", "bogus", headers=OCTET, content=b"x")
        self.call("quota", 413, "PUT", f"/v2/images/{self.full_b}/file", self.b, headers=OCTET, content=b"x" * SMALL)
        self.call("media_type", 415, "PUT", f"/v2/images/{self.queued}/file", self.a,
                  headers={"Content-Type": "text/plain"}, content=b"x")
        self.call("bad_id", 400, "PUT", "/v2/images/not-a-uuid/file", self.a, headers=OCTET, content=b"x")
        self.call("delete", 204, "DELETE", f"/v2/images/{image_id}", self.a)

    def run(self) -> None:
        i = 0
        while time.monotonic() < self.soak.deadline and self.soak.sent < MAX_REQUESTS and self.soak.gateway_alive():
            self.cycle(i)
            i += 1
        self.http.close()


class Soak:
    def __init__(self, stack: Stack, gw, minutes: float):
        self.stack, self.gw = stack, gw
        self.deadline = time.monotonic() + minutes * 60
        self.lock = threading.Lock()
        self.statuses: Counter = Counter()
        self.by_action: Counter = Counter()
        self.unexpected: Counter = Counter()
        self.examples: list[str] = []
        self.sent = 0

    def record(self, action: str, status: int | None, expected: int, detail: str) -> None:
        """status None: the request failed on the client's side (connection, timeout)."""
        with self.lock:
            self.sent += status is not None
            self.statuses[str(status)] += status is not None
            self.by_action[f"{action} {status}"] += 1
        if status != expected:
            self.fail(f"{action}: {status} (expected {expected})", detail)

    def fail(self, what: str, detail: str) -> None:
        with self.lock:
            self.unexpected[what] += 1
            if len(self.examples) < 10:
                self.examples.append(f"{what}: {detail}")

    def gateway_alive(self) -> bool:
        return self.gw.proc.poll() is None


def sample(pid: int, t0: float) -> dict:
    return {"t": round(time.monotonic() - t0, 1), "rss_mib": round(gateway_rss_mib(pid), 2), "fds": open_fds(pid)}


def window_median(samples: list[dict], start: float, end: float) -> float | None:
    values = [s["rss_mib"] for s in samples if start <= s["t"] < end]
    return round(statistics.median(values), 2) if values else None


def counted_by_gateway(gw) -> float | None:
    with contextlib.suppress(httpx.HTTPError):
        return gw.metric("glance_gate_requests_total")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30, help="how long the load runs")
    parser.add_argument("--clients", type=int, default=6, help="concurrent clients (threads)")
    parser.add_argument("--sample-seconds", type=float, default=5, help="RSS/fd sampling interval")
    parser.add_argument("--warmup-seconds", type=float, default=None,
                        help="samples ignored for the RSS windows (default: 30 s, or a sixth of a short run)")
    parser.add_argument("--window-seconds", type=float, default=60,
                        help="length of the first and last RSS windows compared; RSS saws with each "
                             "upload's buffers, so long runs want long windows")
    parser.add_argument("--fd-slack", type=int, default=10, help="--check: fds allowed to stay open once idle")
    parser.add_argument("--check", action="store_true", help="exit 1 on hard failures")
    args = parser.parse_args(argv)
    duration = args.minutes * 60
    warmup = args.warmup_seconds if args.warmup_seconds is not None else min(30.0, duration / 6)
    window = min(args.window_seconds, (duration - warmup) / 2)  # the first and the last window never overlap

    up = subprocess.run([str(REPO / "scripts" / "cloud"), "up"], capture_output=True, text=True, timeout=600)
    if up.returncode:
        sys.exit(f"scripts/cloud up failed:\n{up.stdout}{up.stderr}")
    stack = Stack(load_cloud())
    project_b = stack.user("userB")["project_id"]
    result: dict = {"timestamp": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                    "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine(),
                    "minutes": args.minutes, "clients": args.clients, "warmup_seconds": warmup,
                    "window_seconds": window}
    samples: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="glance-gate-soak-") as tmp:
        gw = start_gateway(Path(tmp), stack, quota={project_b: stack.usage(project_b)})
        pid = gw.proc.pid
        try:
            time.sleep(1)
            fds_idle_before = open_fds(pid)
            soak = Soak(stack, gw, args.minutes)
            clients = [Client(soak, n) for n in range(args.clients)]
            t0 = time.monotonic()
            for c in clients:
                c.start()
            print(f"soak: {args.clients} clients for {args.minutes} min through {gw.url}", flush=True)
            while any(c.is_alive() for c in clients) and soak.gateway_alive():
                samples.append(sample(pid, t0))
                time.sleep(args.sample_seconds)
            for c in clients:
                c.join(90)
            alive = soak.gateway_alive()
            elapsed = time.monotonic() - t0
            if alive:
                time.sleep(2)  # keep-alive connections closed, flows finished
                fds_idle_after = open_fds(pid)
                counted = counted_by_gateway(gw)
            else:
                fds_idle_after = counted = None
            for c in clients:
                with contextlib.suppress(Exception):
                    stack.delete_image(c.queued)
                    stack.delete_image(c.full_b, "userB")
        except BaseException:
            print(f"--- gateway log ({gw.log}) ---\n{gw.log.read_text()[-3000:]}", file=sys.stderr)
            raise
        finally:
            stop(gw.proc)

    load = [s for s in samples if s["t"] >= warmup]
    first = window_median(samples, warmup, warmup + window)
    last = window_median(samples, elapsed - window, elapsed + 1)
    fd_values = [s["fds"] for s in load] or [s["fds"] for s in samples]
    result.update(
        elapsed_seconds=round(elapsed, 1),
        requests=soak.sent, requests_per_second=round(soak.sent / elapsed, 1),
        by_status=dict(sorted(soak.statuses.items())), by_action=dict(sorted(soak.by_action.items())),
        unexpected=dict(soak.unexpected), unexpected_examples=soak.examples,
        gateway_alive=alive, gateway_counted=counted,
        rss_mib={"first_window_median": first, "last_window_median": last,
                 "growth_pct": round((last - first) / first * 100, 2) if first and last else None,
                 "max": max((s["rss_mib"] for s in samples), default=None)},
        fds={"idle_before": fds_idle_before, "first": fd_values[0] if fd_values else None,
             "last": fd_values[-1] if fd_values else None, "max": max(fd_values, default=None),
             "idle_after": fds_idle_after},
        samples=samples,
    )
    failures = []
    if soak.unexpected:
        failures.append(f"{sum(soak.unexpected.values())} unexpected answers or client errors")
    if not alive:
        failures.append("the gateway died")
    else:
        if fds_idle_after - fds_idle_before > args.fd_slack:
            failures.append(f"{fds_idle_after - fds_idle_before} fds left open once idle (> {args.fd_slack})")
        if not soak.statuses["None"] and counted != soak.sent:  # every request counted once
            failures.append(f"the gateway counted {counted} requests, the clients sent {soak.sent}")
    result["hard_failures"] = failures

    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak-latest.json").write_text(json.dumps(result, indent=2) + "\n")
    rss, fds = result["rss_mib"], result["fds"]
    print(f"soak: {soak.sent} requests in {elapsed:.0f} s ({result['requests_per_second']}/s), "
          f"by status {result['by_status']}; gateway counted {counted}")
    print(f"soak: RSS MiB first window {rss['first_window_median']}, last {rss['last_window_median']}, "
          f"growth {rss['growth_pct']} %, max {rss['max']}")
    print(f"soak: fds idle {fds['idle_before']} -> under load first {fds['first']}, last {fds['last']}, "
          f"max {fds['max']} -> idle {fds['idle_after']}")
    for line in [*soak.examples, *failures]:
        print(f"soak: {line}")
    print(f"soak: wrote {out / 'soak-latest.json'}")
    return 1 if args.check and failures else 0


if __name__ == "__main__":
    sys.exit(main())
