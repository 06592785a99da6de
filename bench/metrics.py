"""What the metrics cost, on the cloud-in-a-box, on loopback.

    .venv/bin/python bench/metrics.py [--size-mib 256] [--runs 3] [--scrape-every 1.0]

1. upload throughput through one gateway, side by side in one run: rounds of
   one upload while nothing scrapes it, and one while a scraper fetches
   /metrics every `--scrape-every` seconds (Prometheus' default is 15 s, so
   1 s is pessimistic); median MiB/s of each and their ratio;
2. scrape time: GET /metrics, idle and during an upload (median, p90, max).

Prints the figures, writes bench/results/metrics-latest.json. Nothing asserted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.upload import MiB, machine, rate, upload  # noqa: E402
from tests.support.stack import Stack, load_cloud, start_gateway, stop  # noqa: E402


class Scraper:
    """Fetches /metrics every `every` seconds on a thread, timing each scrape."""

    def __init__(self, url: str, every: float):
        self.url, self.every = url, every
        self.seconds: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self._stop.is_set():
                started = time.perf_counter()
                http.get(self.url).raise_for_status()
                self.seconds.append(time.perf_counter() - started)
                self._stop.wait(self.every)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(15)


def summary(seconds: list[float]) -> dict:
    ms = [s * 1000 for s in seconds]
    p90 = statistics.quantiles(ms, n=10)[-1] if len(ms) > 1 else ms[0]
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 2),
            "p90_ms": round(p90, 2), "max_ms": round(max(ms), 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scrape-every", type=float, default=1.0)
    args = parser.parse_args(argv)
    size = args.size_mib * MiB
    stack = Stack(load_cloud())
    token = stack.token("userA")
    images: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        gw = start_gateway(Path(tmp), stack)
        try:
            with Scraper(gw.metrics_url, 0.05) as idle_scraper:
                time.sleep(1.5)
            idle = idle_scraper.seconds
            plain, scraped, during = [], [], []
            with httpx.Client(timeout=httpx.Timeout(120, connect=10)) as http:
                for _ in range(args.runs):
                    for scrape in (False, True):
                        images.append(stack.create_image())
                        if scrape:
                            with Scraper(gw.metrics_url, args.scrape_every) as scraper:
                                seconds = upload(http, gw.url, images[-1], token, size)
                            during += scraper.seconds
                            scraped.append(rate(size, seconds))
                        else:
                            plain.append(rate(size, seconds := upload(http, gw.url, images[-1], token, size)))
        finally:
            stop(gw.proc)
            for image_id in images:
                stack.delete_image(image_id)
    result = {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/metrics.py", *(argv or sys.argv[1:])]),
        "machine": machine(), "size_mib": args.size_mib, "runs": args.runs,
        "upload_mib_s": {"not_scraped": plain, "scraped": scraped},
        "ratio_scraped_to_not": round(statistics.median(scraped) / statistics.median(plain), 3),
        "scrape_idle": summary(idle), "scrape_during_upload": summary(during),
    }
    print(json.dumps(result, indent=2))
    out = REPO / "bench" / "results" / "metrics-latest.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
