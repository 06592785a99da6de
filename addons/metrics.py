"""Every Prometheus metric of glance-gate, and the one place that sets them.

Served by prometheus_client's HTTP server on its own thread, away from the
proxy's event loop. Labels are small fixed sets: project and user ids belong
in the audit trail, not in label values.

Under the supervisor, each worker writes its samples to files in
PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode) and the
supervisor serves their sum, with the CPU and memory of all its processes."""

from __future__ import annotations

import asyncio
import glob
import logging
import os
from collections.abc import Callable
from pathlib import Path

from mitmproxy.version import VERSION as MITMPROXY_VERSION
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, start_http_server
from prometheus_client import multiprocess
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

from addons.exchange import UPSTREAM, Exchange
from policy.config import Config
from policy.decision import BYTES_STORED
from policy.exceptions import Misconfigured, Unavailable
from policy.health import Probe

log = logging.getLogger("glance_gate.metrics")

VERSION = "0.1.0"
PROBE_SECONDS = 5
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Seconds: the added latency is milliseconds, uploads take minutes.
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
IMPORT_METHODS = frozenset({"glance-direct", "copy-image", "web-download", "glance-download"})
_SIZES = tuple(float(2**n) for n in range(10, 41, 2))  # 1 KiB … 1 TiB

requests = Counter("glance_gate_requests", "Requests by final status.",
                   ["method", "route", "code", "reason", "source"])
request_duration = Histogram("glance_gate_request_duration_seconds",
                             "From request headers to the final status.", ["route"], buckets=_LATENCY)
upstream_duration = Histogram("glance_gate_upstream_duration_seconds",
                              "From forwarding to Glance to the end of its answer.", ["route"],
                              buckets=_LATENCY)
decision_duration = Histogram("glance_gate_decision_duration_seconds",
                              "Time to decide an upload: the latency the gateway adds.", buckets=_LATENCY)
upload_bytes = Counter("glance_gate_upload_bytes", "Upload body bytes forwarded to Glance.")
upload_size = Histogram("glance_gate_upload_size_bytes", "Sizes of uploads Glance accepted.", buckets=_SIZES)
pumped_bytes = Counter("glance_gate_pumped_bytes", "Answer body bytes moved by the pump (addons/wire.py).")
uploads_in_flight = Gauge("glance_gate_uploads_in_flight", "Uploads streaming to Glance now.",
                          multiprocess_mode="livesum")
quota_rejections = Counter("glance_gate_quota_rejections", "Uploads refused for the quota.")
quota_would_refuse = Counter("glance_gate_quota_would_refuse",
                             "Requests a quota would have refused, passed under quota.enforce = dry-run.",
                             ["resource"])
# Only projects at or over quota.warn_ratio of a limit: a project below it is
# removed (set to 0 first, which the supervisor's scrape drops: a worker's file keeps it).
quota_near_limit = Gauge("glance_gate_quota_near_limit",
                         "Usage (and reservations) over the limit, of projects at or over quota.warn_ratio.",
                         ["project", "resource"], multiprocess_mode="livemax")
quota_reservations = Counter("glance_gate_quota_reservations", "Quota reservations settled, by outcome.",
                             ["outcome"])  # committed, released, error (left to its lease)
# A listing of 5,000 images takes seconds; a drift is anything from a byte to terabytes.
_RECONCILE = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_DRIFT = (0.0, *_SIZES)
quota_reconcile_duration = Histogram("glance_gate_quota_reconcile_duration_seconds",
                                     "Time to re-list one project's images and correct its usage.",
                                     buckets=_RECONCILE)
quota_drift = Histogram("glance_gate_quota_drift_bytes",
                        "Bytes by which a reconciliation corrected a project's usage, either way.",
                        buckets=_DRIFT)
imports = Counter("glance_gate_imports", "Image imports by method and final reason.", ["method", "reason"])
token_validations = Counter("glance_gate_token_validations", "Token validations.",
                            ["method", "result", "cache"])
dependency_up = Gauge("glance_gate_dependency_up", "1 when a dependency gives what a decision needs.",
                      ["dependency"], multiprocess_mode="livemostrecent")  # one worker probes
dependency_misconfigured = Gauge("glance_gate_dependency_misconfigured",
                                 "1 when a dependency refuses the gateway's own identity or URL.", ["dependency"],
                                 multiprocess_mode="livemostrecent")
connections_refused = Counter("glance_gate_connections_refused", "Client connections closed by a slow-client bound.",
                              ["reason"])  # per_client_cap, head_deadline
# A gauge, not an Info: Info does not work in multiprocess mode.
build_info = Gauge("glance_gate_build_info", "Versions of glance-gate and mitmproxy.", ["version", "mitmproxy"],
                   multiprocess_mode="max")


def token_validated(method: str, result: str, cache: str) -> None:
    token_validations.labels(method, result, cache).inc()


def reconciled(seconds: float, correction: int) -> None:
    quota_reconcile_duration.observe(seconds)
    quota_drift.observe(abs(correction))


def connection_refused(reason: str) -> None:
    connections_refused.labels(reason).inc()


_near: set[tuple[str, str]] = set()  # the gauge's series now


def near_limit(project: str, resource: str, ratio: float | None) -> None:
    if ratio is not None:
        quota_near_limit.labels(project, resource).set(ratio)
        _near.add((project, resource))
    elif (project, resource) in _near:
        _near.discard((project, resource))
        quota_near_limit.labels(project, resource).set(0)
        quota_near_limit.remove(project, resource)


def reservation_settled(outcome: str) -> None:
    quota_reservations.labels(outcome).inc()


def forwarding(exchange: Exchange) -> None:
    if exchange.streaming_upload:
        uploads_in_flight.inc()


def finished(exchange: Exchange) -> None:
    route = exchange.route.kind
    requests.labels(exchange.method, route, str(exchange.status), exchange.reason, exchange.source).inc()
    request_duration.labels(route).observe(exchange.duration)
    if exchange.forwarded_at is not None and exchange.source == UPSTREAM:
        upstream_duration.labels(route).observe(exchange.ended - exchange.forwarded_at)
    if exchange.decision_seconds is not None:
        decision_duration.observe(exchange.decision_seconds)
    if exchange.reason == "quota":
        quota_rejections.inc()
    if would := exchange.quota_would_refuse:
        quota_would_refuse.labels(would.figures.resource if would.figures else BYTES_STORED).inc()
    if exchange.route.is_import:
        method = exchange.verdict.import_method if exchange.verdict else None
        imports.labels(method if method in IMPORT_METHODS else "other", exchange.reason).inc()
    if exchange.streaming_upload:
        uploads_in_flight.dec()
        upload_bytes.inc(exchange.transferred)
        if exchange.upstream_status is not None and exchange.upstream_status < 300:
            upload_size.observe(exchange.transferred)


class Metrics:
    """Serves /metrics and probes the dependencies the decisions need.

    serve=False: a worker, whose samples the supervisor serves; probe=False: a
    worker other than the one that probes for all."""

    def __init__(self, serve: bool = True, probe: bool = True) -> None:
        self._serves, self._probes = serve, probe
        self._probe: asyncio.Task | None = None
        self._served: tuple[str, int] | None = None

    def serve(self, config: Config) -> None:
        build_info.labels(VERSION, MITMPROXY_VERSION).set(1)
        address = config.gateway.metrics
        if not self._serves or self._served == address:
            return
        if self._served is not None:
            log.warning("metrics stay at %s:%d until restart", *self._served)
            return
        start_http_server(address[1], addr=address[0])
        self._served = address
        log.info("metrics at http://%s:%d/metrics", *address)

    def probe(self, probes: dict[str, Probe]) -> None:
        """probes: policy.health's, each raising when a decision would fail."""
        if not self._probes:
            return
        if self._probe:
            self._probe.cancel()
        self._probe = asyncio.get_running_loop().create_task(self._probe_forever(probes))

    async def _probe_forever(self, probes: dict[str, Probe]) -> None:
        states: dict[str, str] = {}
        while True:
            for name, probe in probes.items():
                try:
                    await probe()
                    state = "up"
                except Unavailable as e:
                    # Glance's probe logs in to Keystone first: a failed login is Keystone's, its own probe says so.
                    kind = "misconfigured" if isinstance(e, Misconfigured) else "down"
                    state = f"{kind}: {e.detail}" if e.dependency == name else "up"
                except Exception as e:  # a probe's own bug must not stop the others
                    state = f"down: {type(e).__name__}: {e}"
                dependency_up.labels(name).set(state == "up")
                dependency_misconfigured.labels(name).set(state.startswith("misconfigured"))
                if states.get(name, "up") != state:  # one line per change, what to fix included
                    log.log(logging.INFO if state == "up" else logging.WARNING, "dependency %s: %s", name, state)
                states[name] = state
            await asyncio.sleep(PROBE_SECONDS)

    def done(self) -> None:
        if self._probe:
            self._probe.cancel()


class WorkerProcesses:
    """The process metrics of the supervisor and its workers, summed: the
    multiprocess collector has none. `totals()` gives the live pids, the CPU
    seconds of workers already reaped (so the counter never goes back), and
    the number of workers listening."""

    SUMMED = ("process_cpu_seconds_total", "process_resident_memory_bytes",
              "process_virtual_memory_bytes", "process_open_fds")

    def __init__(self, totals: Callable[[], tuple[list[int], float, int]], restarts: Callable[[], int]):
        self.totals, self.restarts = totals, restarts

    def collect(self):
        pids, cpu_of_dead, serving = self.totals()
        sums = dict.fromkeys(self.SUMMED, 0.0)
        sums["process_cpu_seconds_total"] = cpu_of_dead
        start = None
        for pid in pids:
            for family in ProcessCollector(pid=lambda pid=pid: pid, registry=None).collect():
                for sample in family.samples:
                    if sample.name in sums:
                        sums[sample.name] += sample.value
                    elif sample.name == "process_start_time_seconds" and start is None:
                        start = sample.value  # the supervisor's
        yield CounterMetricFamily("process_cpu_seconds_total", "CPU seconds of the supervisor and its workers.",
                                  value=sums["process_cpu_seconds_total"])
        for name, what in (("process_resident_memory_bytes", "Resident memory"),
                           ("process_virtual_memory_bytes", "Virtual memory"),
                           ("process_open_fds", "Open file descriptors")):
            yield GaugeMetricFamily(name, f"{what} of the supervisor and its workers.", value=sums[name])
        if start is not None:
            yield GaugeMetricFamily("process_start_time_seconds", "Start of the supervisor.", value=start)
        yield GaugeMetricFamily("glance_gate_workers", "Worker processes listening now.", value=serving)
        yield CounterMetricFamily("glance_gate_worker_restarts", "Workers restarted after dying.",
                                  value=self.restarts())


class WorkerSamples(multiprocess.MultiProcessCollector):
    """Every worker's samples, summed. prometheus_client fails the whole scrape on
    a file a starting worker has created but not yet sized, and on the live
    gauges of a dead worker removed under it: skip the first, retry the second."""

    def collect(self):
        for _ in range(3):
            files = [f for f in glob.glob(os.path.join(self._path, "*.db")) if _size(f) >= 8]
            try:
                families = self.merge(files, accumulate=True)
            except FileNotFoundError:
                continue
            for family in families:
                if family.name == "glance_gate_quota_near_limit":  # only projects near their limit
                    family.samples = [s for s in family.samples if s.value > 0]
            return families
        return []


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def serve_workers(config: Config, directory: Path, processes: WorkerProcesses) -> None:
    """The supervisor's /metrics: every worker's samples, summed, plus `processes`."""
    registry = CollectorRegistry()
    WorkerSamples(registry, path=str(directory))
    registry.register(processes)
    start_http_server(config.gateway.metrics.port, addr=config.gateway.metrics.host, registry=registry)


def worker_gone(directory: Path, pid: int) -> None:
    """Drop a dead worker's live gauges (its counters stay in the sum)."""
    multiprocess.mark_process_dead(pid, str(directory))
