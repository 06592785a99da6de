"""The cost of TLS in the gateway: 1 GiB uploads and downloads through it over
plain HTTP and over HTTPS, side by side in one run, with curl as the client.

    .venv/bin/python bench/tls.py [--size-mib 1024] [--runs 2]

Two gateways, started here on free ports (stopped at the end):
- plain: client --HTTP--> gateway --HTTP--> Glance, gateway --HTTP--> Keystone;
- https: client --HTTPS--> gateway --HTTPS--> Glance (the cloud's TLS Glance,
  same database and store), gateway --HTTPS--> Keystone; every hop verified
  against the test CA.
Each round uploads a `--size-mib` file (random bytes, Content-Length) through
each gateway, then downloads it; the gateway's CPU seconds (utime + stime of
its process) per GiB moved, and the wall-clock rate curl reports. Needs
`CLOUD_TLS=1 scripts/cloud up`. Figures only, nothing asserted; writes
bench/results/tls-latest.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.upload import BLOCKS, children, cpu_seconds, minor_faults  # noqa: E402
from tests.support.stack import Stack, load_cloud, load_tls_cloud, start_gateway, stop  # noqa: E402

MiB = 1024 * 1024
GiB = 1024 * MiB
STEP_SECONDS = 600  # bound of any one transfer


def curl(url: str, token: str, ca_file: str, upload: Path | None = None) -> dict:
    """One transfer with curl; its status, seconds and bytes per second."""
    cmd = ["curl", "-sS", "--http1.1", "--max-time", str(STEP_SECONDS), "--cacert", ca_file,
           "-H", f"X-Auth-Token: {token}", "-o", "/dev/null",
           "-w", "%{http_code} %{time_total} %{speed_upload} %{speed_download} %{size_upload} %{size_download}"]
    if upload:
        cmd += ["-T", str(upload), "-H", "Content-Type: application/octet-stream"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=STEP_SECONDS + 30)
    status, seconds, up, down, sent, received = out.stdout.split()
    if status not in ("200", "204"):
        raise RuntimeError(f"{url} answered {status}: {out.stderr}")
    return {"status": int(status), "seconds": float(seconds), "bytes": int(sent if upload else received),
            "mib_s": round(float(up if upload else down) / MiB, 1)}


def measured(gw, transfer) -> dict:
    pids = [gw.proc.pid, *children(gw.proc.pid)]  # the supervisor and its worker
    before, faults = cpu_seconds(pids), minor_faults(pids)
    result = transfer()
    result["gateway_cpu_seconds"] = round(cpu_seconds(pids) - before, 2)
    result["gateway_cpu_seconds_per_gib"] = round(result["gateway_cpu_seconds"] / (result["bytes"] / GiB), 2)
    result["gateway_minflt_per_gib"] = round((minor_faults(pids) - faults) / (result["bytes"] / GiB))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--note", default="", help="recorded with the figures, e.g. how busy the machine was")
    args = parser.parse_args()
    stack, tls = Stack(load_cloud()), load_tls_cloud()
    tmp = Path(tempfile.mkdtemp(prefix="glance-gate-bench-tls-"))
    data = tmp / "image.raw"
    with data.open("wb") as f:
        for i in range(args.size_mib):
            f.write(BLOCKS[i % len(BLOCKS)])
    tls_dir = Path(tls["tls_dir"])
    gateways = {
        "plain": start_gateway(tmp, stack),
        "https": start_gateway(tmp, stack, upstream=tls["glance_tls_url"], keystone=tls["keystone_tls_url"],
                               keystone_settings={"ca_file": tls["ca_file"]},
                               gateway_settings={"tls_cert_file": str(tls_dir / "server.pem"),
                                                 "tls_key_file": str(tls_dir / "server.key"),
                                                 "upstream_ca_file": tls["ca_file"]}),
    }
    token = stack.token("userA")
    results: dict[str, dict[str, list[dict]]] = {mode: {"upload": [], "download": []} for mode in gateways}
    images = []
    try:
        for _ in range(args.runs):
            for mode, gw in gateways.items():  # side by side: plain, then https, each round
                image_id = stack.create_image("userA", name=f"bench-tls-{mode}-{time.time_ns()}")
                images.append(image_id)
                url = f"{gw.url}/v2/images/{image_id}/file"
                results[mode]["upload"].append(measured(gw, lambda: curl(url, token, tls["ca_file"], data)))
                results[mode]["download"].append(measured(gw, lambda: curl(url, token, tls["ca_file"])))
                print(mode, results[mode]["upload"][-1], results[mode]["download"][-1], flush=True)
    finally:
        for gw in gateways.values():
            stop(gw.proc)
        for image_id in images:
            stack.delete_image(image_id)
        data.unlink()

    summary = {mode: {kind: {"median_mib_s": round(statistics.median(r["mib_s"] for r in runs), 1),
                             "median_gateway_cpu_seconds_per_gib":
                                 round(statistics.median(r["gateway_cpu_seconds_per_gib"] for r in runs), 2),
                             "median_gateway_minflt_per_gib":
                                 statistics.median(r["gateway_minflt_per_gib"] for r in runs)}
                      for kind, runs in by_kind.items()}
               for mode, by_kind in results.items()}
    for kind in ("upload", "download"):
        summary[f"https_vs_plain_{kind}"] = {
            "rate": round(summary["https"][kind]["median_mib_s"] / summary["plain"][kind]["median_mib_s"], 3),
            "gateway_cpu_per_gib": round(summary["https"][kind]["median_gateway_cpu_seconds_per_gib"]
                                         / summary["plain"][kind]["median_gateway_cpu_seconds_per_gib"], 3)}
    report = {
        "command": " ".join(["bench/tls.py", *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "note": args.note,
                    "load_average_at_end": os.getloadavg()},
        "size_mib": args.size_mib, "runs": args.runs, "summary": summary, "results": results,
    }
    out = REPO / "bench" / "results" / "tls-latest.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
