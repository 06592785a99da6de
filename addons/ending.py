"""How a request ends, in one place: every addon that refuses a request, or
ends it after an unexpected error, is given this service (and a config
getter), never the gate. Each request is finished exactly once, with its
final status: counted, its reservation settled, audited."""

from __future__ import annotations

import logging
from collections.abc import Callable

from mitmproxy import http

from addons import metrics, wire
from addons.audit import AuditTrail
from addons.exchange import Exchange
from policy import decision as rules
from policy.config import Config
from policy.refusal import Refusal, render, request_id
from policy.routes import AMBIGUOUS, OTHER, Route

log = logging.getLogger("glance_gate")


class Ending:
    def __init__(self, config: Callable[[], Config | None]):
        self.config = config
        self.audit: AuditTrail | None = None  # opened by the gate's configure
        self.in_flight = 0  # requests begun and not finished: what a drain waits for
        self.draining = False  # answers then close their connection, so clients move on

    def begin(self, exchange: Exchange, flow: http.HTTPFlow) -> None:
        flow.metadata["glance_gate"] = exchange
        self.in_flight += 1

    def internal_error(self, flow: http.HTTPFlow, where: str, mid_stream: bool = False) -> None:
        """Ends the request at the gateway after an unexpected exception (the
        one being handled): 503 `internal`, counted, audited, and logged with
        its traceback. Nothing more of the request is forwarded."""
        log.exception("internal error in %s: %s %s ends at the gateway with 503",
                      where, flow.request.method, flow.request.path[:200])
        self.end(flow, rules.internal(), mid_stream)

    def end(self, flow: http.HTTPFlow, refusal: Refusal, mid_stream: bool = False) -> None:
        """Ends a request with a refusal of no rule of the gate's, counted like any."""
        try:
            if (exchange := flow.metadata.get("glance_gate")) is None:  # failed before it was classified
                exchange = Exchange(Route(OTHER, ""), flow.request.method, "", request_id())
                self.begin(exchange, flow)
            if not exchange.finished:
                self.refuse(flow, exchange, refusal, mid_stream=mid_stream)
        finally:
            if not mid_stream and flow.killable:  # also when the refusal itself failed
                flow.kill()

    def refuse(self, flow: http.HTTPFlow, exchange: Exchange, refusal: Refusal,
               mid_stream: bool = False) -> None:
        config = self.config()
        assert config
        headers, body = render(refusal, exchange.request_id, config.keystone.url)
        exchange.refuse(refusal)
        linger = config.gateway.linger_seconds
        if mid_stream:
            wire.abort(flow, refusal.status, headers, body, linger)
        else:
            flow.request.headers.pop("expect", None)  # no 100 Continue for a refusal
            wire.refuse(flow, refusal.status, headers, body, linger)
        self.finish(exchange)

    def finish(self, exchange: Exchange) -> None:
        """Called exactly once per request, with its final status."""
        self.in_flight -= 1
        if exchange.settle:
            exchange.settle()
        metrics.finished(exchange)
        if would := exchange.quota_would_refuse:
            log.warning("quota dry-run: %s %s would have been refused, passed: %s",
                        exchange.request_id, exchange.route.kind, would.message)
        if (exchange.route.is_upload or exchange.buffered or exchange.route.kind == AMBIGUOUS) and self.audit:
            self.audit.write(exchange)
