"""Benchmark of glance-gate against the cloud-in-a-box, on loopback.

    .venv/bin/python bench/upload.py [--size-mib 1024] [--runs 2] [--https]

What it measures, each against Glance directly and through a glance-gate it
starts itself (quota unlimited, on a free port; stopped at the end):

1. upload throughput: `--runs` rounds of one direct and one gateway upload of a
   `--size-mib` body (streamed from 1 MiB blocks of random data, Content-Length
   set), wall time from the first byte to the 204; median MiB/s and the ratio
   gateway/direct. CPU seconds of the client, the gateway and Glance per upload
   are recorded too: Glance's hashing is CPU bound, and on a small machine the
   gateway and Glance compete for the same cores.
2. the gateway's RSS (VmRSS of its process, sampled every 50 ms): idle, and
   peak during the gateway uploads and downloads.
3. early rejection of a declared 1 GiB upload (bad token -> 401; quota -> 413
   from a second gateway with a 1 KiB quota for projB), over a raw socket:
   with `Expect: 100-continue` (no body byte is sent; time to the status line,
   and whether the connection is then closed), and without it (the client
   streams the body at once; how many bytes the kernel accepted before the
   close/reset, an upper bound of what the gateway could have read).
4. download throughput: GET of an uploaded image, direct vs gateway (and with
   `--https`, through a gateway with HTTPS on both legs), with curl (output
   to /dev/null): the Python client tops out below Glance.

Per GiB moved through a gateway: its CPU seconds and its minor page faults
(`minflt` of /proc/PID/stat, the supervisor and its worker).

Prints a table, writes bench/results/latest.json. Needs `scripts/cloud up`
(run here, idempotent). Figures only: nothing is asserted about timings.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import errno
import functools
import json
import os
import platform
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.support.stack import Stack, connect, put_head, start_gateway, stop  # noqa: E402

MiB = 1024 * 1024
GiB = 1024 * MiB
STATE = Path(os.environ.get("GLANCE_GATE_STATE", REPO / ".state"))
STEP_SECONDS = 600  # bound of any one transfer
BLOCKS = [os.urandom(MiB) for _ in range(16)]  # cycled: random, so nothing compresses
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- helpers ----

def body(size: int, deadline: float):
    """`size` bytes in 1 MiB blocks, never held in memory as a whole."""
    sent = 0
    while sent < size:
        if time.monotonic() > deadline:
            raise TimeoutError("upload took longer than the step bound")
        block = BLOCKS[(sent // MiB) % len(BLOCKS)]
        n = min(MiB, size - sent)
        yield block if n == MiB else block[:n]
        sent += n


def rss_mib(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:  # a worker that just exited
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields from the third (state) on; [] for a process gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes (all their threads)."""
    return sum(int(f[11]) + int(f[12]) for f in map(_stat, pids) if f) / CLK_TCK


def minor_faults(pids: list[int]) -> int:
    """Minor page faults of the processes (`minflt`): what glibc's malloc costs
    when it maps and unmaps a region per large buffer."""
    return sum(int(f[7]) for f in map(_stat, pids) if f)


def gateway_rss_mib(pid: int) -> float:
    """The supervisor's VmRSS and its workers'."""
    return sum(rss_mib(p) for p in [pid, *children(pid)])


class RssSampler:
    """Peak VmRSS of the gateway (supervisor and workers), sampled every 50 ms in a thread."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid, self.interval, self.peak = pid, interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, gateway_rss_mib(self.pid))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, gateway_rss_mib(self.pid))


class CpuMeter:
    """CPU seconds used by client (this process), gateway and Glance during a
    block, and the gateway's minor page faults."""

    def __init__(self, gateway_pid: int, glance_pids: list[int]):
        self.groups = {"client": [os.getpid()], "gateway": [gateway_pid, *children(gateway_pid)],
                       "glance": glance_pids}
        self.used: dict[str, float] = {}
        self.gateway_faults = 0

    def __enter__(self) -> CpuMeter:
        self._start = {k: cpu_seconds(p) for k, p in self.groups.items()}
        self._faults = minor_faults(self.groups["gateway"])
        return self

    def __exit__(self, *exc) -> None:
        self.used = {k: round(cpu_seconds(p) - self._start[k], 2) if p else None
                     for k, p in self.groups.items()}
        self.gateway_faults = minor_faults(self.groups["gateway"]) - self._faults


def glance_pids(stack: Stack) -> list[int]:
    """Glance's gunicorn master and workers; none if the pid file is unreadable."""
    try:
        master = int(Path(stack.cloud["pids"]["glance"]).read_text())
        return [master, *children(master)]
    except (KeyError, OSError, ValueError):
        return []


def rate(size: int, seconds: float) -> float:
    return round(size / MiB / seconds, 1)


# ----------------------------------------------------------- measurements ----

def upload(http: httpx.Client, base: str, image_id: str, token: str, size: int) -> float:
    headers = {"X-Auth-Token": token, "Content-Type": "application/octet-stream",
               "Content-Length": str(size)}
    started = time.perf_counter()
    r = http.put(f"{base}/v2/images/{image_id}/file", headers=headers,
                 content=body(size, time.monotonic() + STEP_SECONDS))
    seconds = time.perf_counter() - started
    if r.status_code != 204:
        raise RuntimeError(f"upload to {base} answered {r.status_code}: {r.text[:300]}")
    return seconds


def download(http: httpx.Client, base: str, image_id: str, token: str, size: int, ca_file: str = "") -> float:
    """With curl, not the Python client: httpx itself tops out near 380 MB/s,
    below what Glance serves, so it would measure itself."""
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "--max-time", str(STEP_SECONDS),
                          *(["--http1.1", "--cacert", ca_file] if ca_file else []),
                          "-w", "%{http_code} %{size_download} %{time_total}", "-H", f"X-Auth-Token: {token}",
                          f"{base}/v2/images/{image_id}/file"],
                         capture_output=True, text=True, timeout=STEP_SECONDS + 30, check=True).stdout
    code, received, seconds = out.split()
    if code != "200":
        raise RuntimeError(f"download from {base} answered {code}")
    if int(received) != size:
        raise RuntimeError(f"download from {base}: {received} bytes, expected {size}")
    return float(seconds)


def transfers(kind: str, stack: Stack, gw, size: int, runs: int, images: list[str], https=None) -> dict:
    """`runs` rounds of direct then gateway (then, for downloads with `https`
    = (gateway, CA file), that gateway over HTTPS to the HTTPS Glance); uploads
    create their images (kept in `images`)."""
    token = stack.token("userA")
    targets = {"direct": (stack.glance, gw, ""), "gateway": (gw.url, gw, "")}
    if https and kind == "download":
        targets["gateway https"] = (https[0].url, https[0], https[1])
    per: dict[str, list[dict]] = {name: [] for name in targets}
    peak = 0.0
    with httpx.Client(timeout=httpx.Timeout(120, connect=10)) as http:
        for _ in range(runs):
            for name, (base, meter, ca_file) in targets.items():
                if kind == "upload":
                    image_id = stack.create_image("userA", name=f"bench-{name}-{time.time_ns()}")
                    images.append(image_id)
                    run = functools.partial(upload, http, base, image_id, token, size)
                else:  # the first uploaded image
                    run = functools.partial(download, http, base, images[0], token, size, ca_file)
                with RssSampler(meter.proc.pid) as rss, CpuMeter(meter.proc.pid, glance_pids(stack)) as cpu:
                    seconds = run()
                if name == "gateway":
                    peak = max(peak, rss.peak)
                per[name].append({"seconds": round(seconds, 2), "mib_s": rate(size, seconds),
                                  "cpu_seconds": cpu.used})
                if name != "direct":
                    per[name][-1].update(gateway_cpu_s_per_gib=round(cpu.used["gateway"] / (size / GiB), 2),
                                         gateway_minflt_per_gib=round(cpu.gateway_faults / (size / GiB)))
    median = {name: round(statistics.median(r["mib_s"] for r in rs), 1) for name, rs in per.items()}
    result = {"runs": per, "median_mib_s": median,
              "ratio_gateway_direct": round(median["gateway"] / median["direct"], 3),
              "gateway_peak_rss_mib": round(peak, 1)}
    for name in [n for n in per if n != "direct"]:
        key = name.replace(" ", "_")
        result[f"{key}_cpu_s_per_gib"] = statistics.median(r["gateway_cpu_s_per_gib"] for r in per[name])
        result[f"{key}_minflt_per_gib"] = statistics.median(r["gateway_minflt_per_gib"] for r in per[name])
    return result


def start_https_gateway(tmp: Path, stack: Stack):
    """A gateway with HTTPS on both legs (as bench/tls.py runs it), and the test CA."""
    tls = json.loads((STATE / "cloud-tls.json").read_text())
    tls_dir = Path(tls["tls_dir"])
    gw = start_gateway(tmp, stack, upstream=tls["glance_tls_url"], keystone=tls["keystone_tls_url"],
                       keystone_settings={"ca_file": tls["ca_file"]},
                       gateway_settings={"tls_cert_file": str(tls_dir / "server.pem"),
                                         "tls_key_file": str(tls_dir / "server.key"),
                                         "upstream_ca_file": tls["ca_file"]})
    return gw, tls["ca_file"]


def reject_expect(url: str, image_id: str, token: str) -> dict:
    """Headers with Expect: 100-continue, no body: time to the status line, then
    read on until the gateway closes (EOF or reset)."""
    with connect(url) as sock:
        started = time.perf_counter()
        sock.sendall(put_head(image_id, token, GiB, expect=True))
        reply = b""
        while b"\r\n" not in reply:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
        answered = time.perf_counter() - started
        try:
            while chunk := sock.recv(65536):
                reply += chunk
            closed = "eof"
        except ConnectionResetError:
            closed = "reset"
        except TimeoutError:
            closed = "still open after 10 s"
    return {"status_line": reply.split(b"\r\n", 1)[0].decode(errors="replace"),
            "ms_to_answer": round(answered * 1000, 1), "body_bytes_sent_before_answer": 0,
            "got_100_continue": b" 100 " in reply.split(b"\r\n", 1)[0], "connection": closed}


def reject_no_expect(url: str, image_id: str, token: str) -> dict:
    """Headers then the body at once, as fast as the kernel takes it, while
    watching for the answer; goes on sending until the connection breaks."""
    sent, reply, answered, ended = 0, b"", None, "timeout"
    with connect(url) as sock:
        started = time.perf_counter()
        sock.sendall(put_head(image_id, token, GiB, expect=False))
        sock.setblocking(False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 0.5)
            try:
                if readable:
                    chunk = sock.recv(65536)
                    if not chunk:
                        ended = "eof"
                        break
                    reply += chunk
                    if answered is None and b"\r\n" in reply:
                        answered = time.perf_counter() - started
                if writable and sent < GiB:
                    sent += sock.send(BLOCKS[0][:min(MiB, GiB - sent)])
            except (ConnectionResetError, BrokenPipeError) as e:
                ended = "reset" if e.errno == errno.ECONNRESET else "broken pipe"
                break
            except BlockingIOError:
                pass
    return {"status_line": reply.split(b"\r\n", 1)[0].decode(errors="replace") or None,
            "ms_to_answer": round(answered * 1000, 1) if answered is not None else None,
            "body_bytes_accepted_by_kernel": sent, "connection": ended}


def rejections(stack: Stack, gw_open, gw_quota) -> list[dict]:
    image_a = stack.create_image("userA", name="bench-reject-token")
    image_b = stack.create_image("userB", name="bench-reject-quota")
    cases = [("401 bad token", gw_open.url, image_a, "bad-token"),
             ("413 quota", gw_quota.url, image_b, stack.token("userB"))]
    out = []
    try:
        for label, url, image_id, token in cases:
            for expect, probe in ((True, reject_expect), (False, reject_no_expect)):
                tries = [probe(url, image_id, token) for _ in range(3)]
                times = [t["ms_to_answer"] for t in tries if t["ms_to_answer"] is not None]
                image = stack.image(image_id)
                out.append({"case": label, "expect_100_continue": expect, "tries": tries,
                            "median_ms_to_answer": statistics.median(times) if times else None,
                            "image_after": {"status": image["status"], "size": image["size"]}})
    finally:
        stack.delete_image(image_a, "userA")
        stack.delete_image(image_b, "userB")
    return out


# ----------------------------------------------------------------- report ----

def machine() -> dict:
    from mitmproxy import version
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "?")
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "mitmproxy": version.VERSION, "kernel": platform.release()}


def table(result: dict) -> str:
    rss, m = result["gateway_rss_mib"], result["machine"]
    width = 7 * result["runs"] + 2
    lines = [f"glance-gate bench, {result['timestamp']}: {result['command']}",
             f"{m['nproc']} cores ({m['cpu']}), Python {m['python']}, mitmproxy {m['mitmproxy']};"
             f" load average {result['loadavg_at_start'][0]:.2f} at start,"
             f" {result['loadavg_at_end'][0]:.2f} at end",
             "",
             f"{str(result['size_mib']) + ' MiB':<11}{'path':<15}{'MiB/s per run':<{width}}{'median':>6}"
             "  CPU s per run (client/gateway/glance)"]
    for kind in ("upload", "download"):
        res = result[kind]
        for name in res["runs"]:
            runs = res["runs"][name]
            speeds = " ".join(f"{r['mib_s']:6.1f}" for r in runs)
            cpu = "  ".join("/".join(str(r["cpu_seconds"][k]) for k in ("client", "gateway", "glance"))
                            for r in runs)
            lines.append(f"{kind:<11}{name:<15}{speeds:<{width}}{res['median_mib_s'][name]:>6.1f}  {cpu}")
        lines.append(f"{'':<11}ratio gateway/direct (median): {res['ratio_gateway_direct']}")
        for name in [n for n in res["runs"] if n != "direct"]:
            key = name.replace(" ", "_")
            lines.append(f"{'':<11}{name} per GiB (median): {res[f'{key}_cpu_s_per_gib']} CPU-s,"
                         f" {res[f'{key}_minflt_per_gib']:,} minor faults")
    lines += ["", f"gateway RSS MiB (one process: {rss['processes'] == 1}): idle {rss['idle']},"
                  f" peak during uploads {rss['upload_peak']}, during downloads {rss['download_peak']}",
              "", "rejected 1 GiB upload       status  ms to answer  body bytes (3 tries)"]
    for r in result["rejections"]:
        tries = r["tries"]
        if r["expect_100_continue"]:
            how, sent = "Expect", "sent before the answer: 0"
        else:
            how = "no Expect"
            sent = "accepted by the kernel: " + ", ".join(
                str(t["body_bytes_accepted_by_kernel"]) for t in tries)
        status = " ".join(sorted({(t["status_line"] or "none").split(" ")[1] for t in tries}))
        closed = ", ".join(sorted({t["connection"] for t in tries}))
        lines.append(f"{r['case'] + ', ' + how:<28}{status:<8}{r['median_ms_to_answer']:>12}  "
                     f"{sent}; then {closed}; image {r['image_after']['status']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="upload/download size (MiB)")
    parser.add_argument("--runs", type=int, default=2, help="rounds of direct + gateway")
    parser.add_argument("--https", action="store_true",
                        help="downloads also through a gateway with HTTPS on both legs (CLOUD_TLS=1)")
    args = parser.parse_args(argv)
    size = args.size_mib * MiB

    env = {**os.environ, "CLOUD_TLS": "1"} if args.https else None
    up = subprocess.run([str(REPO / "scripts" / "cloud"), "up"], capture_output=True, text=True,
                        timeout=600, env=env)
    if up.returncode:
        sys.exit(f"scripts/cloud up failed:\n{up.stdout}{up.stderr}")
    stack = Stack(json.loads((STATE / "cloud.json").read_text()))
    result = {"timestamp": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "machine": machine(), "size_mib": args.size_mib, "runs": args.runs,
              "loadavg_at_start": os.getloadavg()}
    images: list[str] = []
    with tempfile.TemporaryDirectory(prefix="glance-gate-bench-") as tmp, \
            contextlib.ExitStack() as running:
        gw = start_gateway(Path(tmp), stack)  # quota unlimited
        running.callback(stop, gw.proc)
        gw_quota = start_gateway(Path(tmp), stack,
                                 quota={stack.user("userB")["project_id"]: 1024})
        running.callback(stop, gw_quota.proc)
        https = None
        if args.https:
            gw_https, ca_file = start_https_gateway(Path(tmp), stack)
            running.callback(stop, gw_https.proc)
            https = (gw_https, ca_file)
        try:
            time.sleep(1)  # let the gateway settle before the idle reading
            rss = {"idle": round(gateway_rss_mib(gw.proc.pid), 1), "processes": 1 + len(children(gw.proc.pid))}
            print(f"uploading {args.runs} x 2 x {args.size_mib} MiB ...", flush=True)
            result["upload"] = transfers("upload", stack, gw, size, args.runs, images)
            print("downloading ...", flush=True)
            result["download"] = transfers("download", stack, gw, size, args.runs, images, https)
            rss.update(upload_peak=result["upload"]["gateway_peak_rss_mib"],
                       download_peak=result["download"]["gateway_peak_rss_mib"])
            result["gateway_rss_mib"] = rss
            print("rejections ...", flush=True)
            result["rejections"] = rejections(stack, gw, gw_quota)
        except BaseException:
            print(f"--- gateway log ({gw.log}) ---\n{gw.log.read_text()[-3000:]}", file=sys.stderr)
            raise
        finally:
            for image_id in images:
                with contextlib.suppress(Exception):
                    stack.delete_image(image_id, "userA")
    result["loadavg_at_end"] = os.getloadavg()
    result["notes"] = [
        f"{result['machine']['nproc']} cores shared by client, gateway and Glance: "
        "the gateway's CPU time is taken from Glance's hashing, so the ratio reflects contention.",
        "CPU s: utime+stime deltas from /proc; Glance's count covers all it served meanwhile.",
        "download: the first uploaded image, GET from each path in turn, with curl.",
        "gateway https: HTTPS from curl to the gateway and from the gateway to the cloud's HTTPS Glance.",
        "gateway: the supervisor and its worker (CPU and RSS summed)."]
    report = table(result)
    print(report)
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
