"""How far one gateway carries a cloud's traffic: workers = 1 and 2, side by side.

    .venv/bin/python bench/scale.py [--seconds 10] [--size-mib 1024] [--runs 1] [--transfers 3] [--baseline DIR]

Starts its own Debian nginx (scripts/deps: nginx-core, wrk) on free loopback
ports as the fastest possible upstream: a small JSON answer (`/small`), a
sparse `--size-mib` file on tmpfs (`/big`), and a WebDAV PUT sink on tmpfs
(`/dav/`). Then, for nginx direct and through glance-gate with workers = 1 and
workers = 2 (each started here, Redis ledger, quota unlimited):

- small requests per second: wrk `-t1 -c32` for `--seconds` on `/small`;
- `--transfers` downloads of `/big` and uploads to `/dav/`, MB/s (curl,
  output to /dev/null, input from the tmpfs file), their median;
- the gateway's CPU (supervisor + workers): ms per small request, seconds per
  GiB moved each way;

and small requests to the cloud-in-a-box's real Glance (`GET /versions`),
direct and through each gateway. `--baseline DIR` adds a row for the
glance-gate of another checkout, e.g. `git archive <commit> | tar -x -C DIR`
of the code before a change. Every `--runs` round measures every path in
turn, so ratios are side by side. Clients are wrk and curl, many times faster
than what they drive (see nginx direct). Prints a table, saves JSON to
bench/results/scale-<time>.json. Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.upload import cpu_seconds, machine  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402
from tests.support.stack import (Gateway, Stack, free_port, load_cloud, start_gateway, stop, wait_port,  # noqa: E402
                         write_config)

MiB = 1024 * 1024
GiB = 1024 * MiB
SMALL = '{"versions": [{"id": "v2.17", "status": "CURRENT"}]}'
STEP_SECONDS = 300  # bound of any one transfer

NGINX_CONF = """\
daemon off;
worker_processes 2;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {shm}/body;
    proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    sendfile on;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        location = /small {{ default_type application/json; return 200 '{small}'; }}
        location = /big {{ alias {shm}/big; }}
        location /dav/ {{
            root {shm};
            dav_methods PUT DELETE;
            client_max_body_size 0;
            create_full_put_path on;
        }}
    }}
}}
"""


class Nginx:
    def __init__(self, tmp: Path, shm: Path, size: int):
        self.tmp, self.shm, self.port = tmp, shm, free_port()
        # nginx's workers run as nobody: they read the file and write the sink
        for d, mode in ((tmp, 0o755), (shm, 0o755), (shm / "body", 0o777), (shm / "dav", 0o777)):
            d.mkdir(exist_ok=True)
            d.chmod(mode)
        with open(shm / "big", "wb") as f:
            f.truncate(size)  # sparse: zeros that cost no memory, read at memory speed
        conf = tmp / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=tmp, shm=shm, port=self.port, small=SMALL))
        log = tmp / "nginx.log"
        self.proc = subprocess.Popen(["/usr/sbin/nginx", "-c", str(conf), "-p", str(tmp)],
                                     stdout=log.open("wb"), stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc, log)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop(self.proc)


def wrk(url: str, seconds: int) -> float:
    out = subprocess.run(["wrk", "-t1", "-c32", f"-d{seconds}s", url], capture_output=True, text=True,
                         timeout=seconds + 60, check=True).stdout
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        raise RuntimeError(f"{url}: {m.group(1)} non-2xx answers:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def curl(*args: str) -> tuple[float, int]:
    """MB/s (10^6 bytes per second) and bytes moved, of one curl transfer."""
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-H", "Expect:", "--max-time", str(STEP_SECONDS),
                          "-w", "%{http_code} %{size_download} %{size_upload} %{time_total}", *args],
                         capture_output=True, text=True, timeout=STEP_SECONDS + 30, check=True).stdout
    code, down, up, seconds = out.split()
    if not code.startswith("2"):
        raise RuntimeError(f"curl {args[-1]} answered {code}")
    moved = max(int(down), int(up))
    return moved / 1e6 / float(seconds), moved


def small(url: str, pids, seconds: int) -> dict:
    """req/s of small requests; the gateway's CPU ms per request when pids() names processes."""
    before = cpu_seconds(pids())
    row: dict = {"req_s": wrk(url, seconds)}
    if pids():
        row["cpu_ms_per_req"] = round((cpu_seconds(pids()) - before) * 1000 / (row["req_s"] * seconds), 3)
    return row


def measure(name: str, base: str, nginx: Nginx, pids, seconds: int, size: int, transfers: int) -> dict:
    """req/s, download and upload MB/s of one path; gateway CPU s/GiB when pids() names processes."""
    row = small(f"{base}/small", pids, seconds)
    for kind, args in (("download", [f"{base}/big"]),
                       ("upload", ["-T", str(nginx.shm / "big"), f"{base}/dav/{name}"])):
        rates, cpu = [], []
        for _ in range(transfers):  # single transfers vary widely on a shared machine
            before = cpu_seconds(pids())
            mb_s, moved = curl(*args)
            assert moved == size, f"{kind} via {name}: {moved} bytes of {size}"
            rates.append(mb_s)
            cpu.append((cpu_seconds(pids()) - before) / (moved / GiB))
            with contextlib.suppress(FileNotFoundError):
                (nginx.shm / "dav" / name).unlink()  # tmpfs is memory
        row[f"{kind}_mb_s"] = statistics.median(rates)
        if pids():
            row[f"{kind}_cpu_s_per_gib"] = round(statistics.median(cpu), 2)
    return row


def start_baseline(tmp: Path, stack: Stack, checkout: Path, upstream: str) -> Gateway:
    """Another checkout's glance-gate (e.g. `git archive` of an older commit),
    run by this venv's Python on the same kind of config."""
    port, metrics_port = free_port(), free_port()
    conf = write_config(tmp / f"baseline-{port}.toml", stack, port=port, metrics_port=metrics_port,
                        upstream=upstream)
    log = tmp / f"baseline-{port}.log"
    proc = subprocess.Popen([sys.executable, "-m", "process.main", "--config", str(conf)],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=checkout,
                            env={**os.environ, "GLANCE_GATE_CONFDIR": str(tmp / "confdir"),
                                 "PYTHONPATH": str(checkout)})
    wait_port(port, proc, log)
    time.sleep(3)  # its workers, if it has any
    return Gateway(f"http://127.0.0.1:{port}", proc, log, conf, metrics_port)


def gateway_pids(gw) -> list[int]:
    return [gw.proc.pid, *gw.worker_pids()]


def median_rows(rounds: list[dict]) -> dict:
    keys = rounds[0].keys()
    return {k: round(statistics.median(r[k] for r in rounds), 2) for k in keys}


def table(result: dict) -> str:
    rows = result["median"]
    lines = [f"bench/scale.py — {result['timestamp']} — {result['machine']['nproc']} cores, "
             f"load {result['loadavg_at_start'][0]:.2f} at start, median of {result['runs']} run(s)"
             f" x {result['transfers']} transfers",
             "", f"{'path':<22}{'small req/s':>12}{'CPU ms/req':>11}{'download MB/s':>15}{'upload MB/s':>13}"
             f"{'CPU s/GiB down':>16}{'CPU s/GiB up':>14}"]
    for path in [p for p in ("nginx", "baseline", "workers=1", "workers=2") if p in rows]:
        r = rows[path]
        lines.append(f"{path:<22}{r['req_s']:>12,.0f}{r.get('cpu_ms_per_req', ''):>11}"
                     f"{r['download_mb_s']:>15,.0f}{r['upload_mb_s']:>13,.0f}"
                     f"{r.get('download_cpu_s_per_gib', ''):>16}{r.get('upload_cpu_s_per_gib', ''):>14}")
    lines.append("")
    for path in [p for p in ("glance direct", "glance via baseline", "glance via workers=1",
                              "glance via workers=2") if p in rows]:
        lines.append(f"{path:<22}{rows[path]['req_s']:>12,.0f}{rows[path].get('cpu_ms_per_req', ''):>11}"
                     "   (GET /versions)")
    lines += ["", "ratios, side by side:"] + [f"  {k}: {v}" for k, v in result["ratios"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="duration of each wrk run")
    parser.add_argument("--size-mib", type=int, default=1024, help="download/upload size")
    parser.add_argument("--runs", type=int, default=1, help="rounds over every path")
    parser.add_argument("--transfers", type=int, default=3, help="downloads and uploads per path and round")
    parser.add_argument("--baseline", type=Path, help="another checkout whose glance-gate gets a row too")
    args = parser.parse_args(argv)
    size = args.size_mib * MiB
    for tool in ("wrk", "curl", "redis-server"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: run scripts/deps")
    up = subprocess.run([str(REPO / "scripts" / "cloud"), "up"], capture_output=True, text=True, timeout=600)
    if up.returncode:
        sys.exit(f"scripts/cloud up failed:\n{up.stdout}{up.stderr}")
    stack = Stack(load_cloud())
    result = {"timestamp": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "machine": machine(), "size_mib": args.size_mib, "seconds": args.seconds, "runs": args.runs,
              "transfers": args.transfers,
              "loadavg_at_start": os.getloadavg()}
    rounds: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="glance-gate-scale-") as tmp, \
            tempfile.TemporaryDirectory(prefix="glance-gate-scale-", dir="/dev/shm") as shm, \
            contextlib.ExitStack() as running:
        tmp, shm = Path(tmp), Path(shm)
        nginx = Nginx(tmp, shm, size)
        running.callback(nginx.stop)
        redis = RedisServer(tmp / "redis").start()
        running.callback(redis.stop)
        ledger = {"ledger": "redis", "redis_url": redis.url}
        gateways = {}
        for n in (1, 2):
            for upstream, label in ((nginx.url, f"workers={n}"), (stack.glance, f"glance via workers={n}")):
                gw = start_gateway(tmp, stack, upstream=upstream, quota_settings=ledger,
                                   gateway_settings={"workers": n})
                running.callback(stop, gw.proc)
                gateways[label] = gw
        paths = ["workers=1", "workers=2"]
        if args.baseline:
            for upstream, label in ((nginx.url, "baseline"), (stack.glance, "glance via baseline")):
                gateways[label] = start_baseline(tmp, stack, args.baseline.resolve(), upstream)
                running.callback(stop, gateways[label].proc)
            paths.insert(0, "baseline")
        for _ in range(args.runs):
            print("nginx direct ...", flush=True)
            rounds.setdefault("nginx", []).append(measure("nginx", nginx.url, nginx, lambda: [], args.seconds, size, args.transfers))
            for label in paths:
                print(f"{label} ...", flush=True)
                gw = gateways[label]
                rounds.setdefault(label, []).append(
                    measure(label, gw.url, nginx, lambda gw=gw: gateway_pids(gw), args.seconds, size, args.transfers))
            print("glance ...", flush=True)
            rounds.setdefault("glance direct", []).append(small(f"{stack.glance}/versions", lambda: [], args.seconds))
            for label in [f"glance via {p}" for p in paths]:
                gw = gateways[label]
                rounds.setdefault(label, []).append(
                    small(f"{gw.url}/versions", lambda gw=gw: gateway_pids(gw), args.seconds))
    result["rounds"] = rounds
    result["median"] = m = {path: median_rows(rs) for path, rs in rounds.items()}
    result["ratios"] = {
        "small req/s, workers=2 / workers=1": round(m["workers=2"]["req_s"] / m["workers=1"]["req_s"], 2),
        "download, workers=1 / nginx direct": round(m["workers=1"]["download_mb_s"] / m["nginx"]["download_mb_s"], 2),
        "upload, workers=1 / nginx direct": round(m["workers=1"]["upload_mb_s"] / m["nginx"]["upload_mb_s"], 2),
        "glance small req/s, via workers=1 / direct":
            round(m["glance via workers=1"]["req_s"] / m["glance direct"]["req_s"], 2),
        "glance small req/s, via workers=2 / direct":
            round(m["glance via workers=2"]["req_s"] / m["glance direct"]["req_s"], 2),
    }
    if "baseline" in m:
        result["ratios"].update({
            "small req/s, workers=1 / baseline": round(m["workers=1"]["req_s"] / m["baseline"]["req_s"], 2),
            "download, workers=1 / baseline":
                round(m["workers=1"]["download_mb_s"] / m["baseline"]["download_mb_s"], 2),
            "upload, workers=1 / baseline": round(m["workers=1"]["upload_mb_s"] / m["baseline"]["upload_mb_s"], 2),
        })
    result["loadavg_at_end"] = os.getloadavg()
    result["notes"] = ["client, nginx, gateway and Glance share the machine's cores",
                       "MB/s are 10^6 bytes per second; the body is a sparse tmpfs file (zeros)",
                       "CPU ms/req, CPU s/GiB: utime+stime of the supervisor and its workers during the wrk run or transfer"]
    report = table(result)
    print(report)
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"scale-{datetime.datetime.now():%Y-%m-%dT%H%M}.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
