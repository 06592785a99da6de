"""Every Prometheus metric of glance-gate, and the one place that sets them.

Served by prometheus_client's HTTP server on its own thread, away from the
proxy's event loop. Labels are small fixed sets: project and user ids belong
in the audit trail, not in label values."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from mitmproxy.version import VERSION as MITMPROXY_VERSION
from prometheus_client import Counter, Gauge, Histogram, Info, start_http_server

from addons.exchange import UPSTREAM, Exchange
from policy.config import Config

log = logging.getLogger("glance_gate.metrics")

VERSION = "0.1.0"
PROBE_SECONDS = 5

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
uploads_in_flight = Gauge("glance_gate_uploads_in_flight", "Uploads streaming to Glance now.")
quota_rejections = Counter("glance_gate_quota_rejections", "Uploads refused for the quota.")
quota_reservations = Counter("glance_gate_quota_reservations", "Quota reservations settled, by outcome.",
                             ["outcome"])  # committed, released, error (left to its lease)
imports = Counter("glance_gate_imports", "Image imports by method and final reason.", ["method", "reason"])
token_validations = Counter("glance_gate_token_validations", "Token validations.",
                            ["method", "result", "cache"])
dependency_up = Gauge("glance_gate_dependency_up", "1 when a dependency answers its probe.", ["dependency"])
build_info = Info("glance_gate_build", "Versions of glance-gate and mitmproxy.")


def token_validated(method: str, result: str, cache: str) -> None:
    token_validations.labels(method, result, cache).inc()


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
    if exchange.route.is_import:
        method = exchange.verdict.import_method if exchange.verdict else None
        imports.labels(method if method in IMPORT_METHODS else "other", exchange.reason).inc()
    if exchange.streaming_upload:
        uploads_in_flight.dec()
        upload_bytes.inc(exchange.transferred)
        if exchange.upstream_status is not None and exchange.upstream_status < 300:
            upload_size.observe(exchange.transferred)


class Metrics:
    """Serves /metrics and probes the dependencies the decisions need."""

    def __init__(self) -> None:
        self._probe: asyncio.Task | None = None
        self._served: tuple[str, int] | None = None

    def serve(self, config: Config) -> None:
        address = config.gateway.metrics
        if self._served == address:
            return
        if self._served is not None:
            log.warning("metrics stay at %s:%d until restart", *self._served)
            return
        start_http_server(address[1], addr=address[0])
        self._served = address
        build_info.info({"version": VERSION, "mitmproxy": MITMPROXY_VERSION})
        log.info("metrics at http://%s:%d/metrics", *address)

    def probe(self, checks: dict[str, Callable[[], Awaitable[bool]]]) -> None:
        """checks: each dependency's own, through the client (and TLS) the decisions use."""
        if self._probe:
            self._probe.cancel()
        self._probe = asyncio.get_running_loop().create_task(self._probe_forever(checks))

    async def _probe_forever(self, checks: dict[str, Callable[[], Awaitable[bool]]]) -> None:
        while True:
            for name, check in checks.items():
                dependency_up.labels(name).set(1 if await check() else 0)
            await asyncio.sleep(PROBE_SECONDS)

    def done(self) -> None:
        if self._probe:
            self._probe.cancel()
