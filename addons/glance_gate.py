"""glance-gate's mitmproxy addon (built with its helpers by addons/compose.py).

Uploads are decided from their headers while the client's body waits in the
kernel's buffers; everything else streams through untouched.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time

from mitmproxy import ctx, exceptions, http
from mitmproxy.connection import ConnectionState
from mitmproxy.net.http.http1 import expected_http_body_size

from addons import metrics, tls, wire
from addons.audit import AuditTrail
from addons.ending import Ending
from addons.exchange import CLIENT_CLOSED, GATEWAY, UPSTREAM, Exchange
from addons.forwarded import ForwardedHeaders
from addons.reservation import Reservation
from addons.tls import ListenerTls
from addons.trusted_auth import TrustedAuth
from policy import config as configuration
from policy.exceptions import ConfigError
from policy import health
from policy import decision as rules
from policy.refusal import Refusal, render, request_id
from policy.gate import UploadGate, UploadRequest, Verdict
from policy.identity import TokenCache, TokenValidator, modes
from policy.imports import ImportBody
from policy.quota import services
from policy.routes import AMBIGUOUS, CHANGE, CREATE, Route, api_path, classify, is_uuid, wsgi_header

log = logging.getLogger("glance_gate")

_LOCATIONS = re.compile(r"/images/[^/]*/locations", re.IGNORECASE)

# Proxy options the policy relies on; see README "Security".
SAFE_OPTIONS = {
    "http2": False,  # HTTP/2 bodies without a length reach an HTTP/1 upstream unframed
    "http3": False,
    "connection_strategy": "lazy",  # no upstream connection for a refused request
    "keep_host_header": True,  # Glance's links name the gateway (addons/forwarded.py)
}


def fail_closed(hook):
    """Around every hook that decides: an unexpected exception ends the request
    at the gateway (503 `internal`), where mitmproxy would log it and forward
    the request undecided."""
    @functools.wraps(hook)
    async def guarded(self: GlanceGate, flow: http.HTTPFlow) -> None:
        try:
            await hook(self, flow)
        except Exception:
            self.ending.internal_error(flow, f"GlanceGate.{hook.__name__}")
    return guarded


class UploadStream:
    """The stream callable of an allowed upload: counts bytes, and cuts the
    upload the moment it breaks a rule that only the body can reveal."""

    def __init__(self, ending: Ending, flow: http.HTTPFlow, exchange: Exchange, verdict: Verdict,
                 reservation: Reservation | None):
        self.ending, self.flow, self.exchange, self.verdict = ending, flow, exchange, verdict
        self.reservation = reservation

    def __call__(self, data: bytes) -> bytes | list[bytes]:
        try:
            return self._next(data)
        except Exception:  # mitmproxy would end the body well-formed: cut it instead
            self.ending.internal_error(self.flow, "UploadStream", mid_stream=True)
            return []

    def _next(self, data: bytes) -> bytes | list[bytes]:
        if self.exchange.finished:
            return []
        if not data:  # end of body
            if self.exchange.transferred == 0:
                self.ending.refuse(self.flow, self.exchange, rules.empty_body(), mid_stream=True)
            else:
                self.exchange.body_complete = True
            return []  # never b"": to a chunked upstream it is the terminating chunk
        if refusal := self.verdict.check_transferred(self.exchange.transferred + len(data)):
            self.ending.refuse(self.flow, self.exchange, refusal, mid_stream=True)
            return []
        self.exchange.transferred += len(data)
        if self.reservation:
            self.reservation.streamed(self.exchange.transferred)
        return data


class GlanceGate:
    def __init__(self, ending: Ending, trusted: TrustedAuth, listener_tls: ListenerTls,
                 forwarded: ForwardedHeaders, metrics_: metrics.Metrics | None = None) -> None:
        self.config: configuration.Config | None = None
        self.gate: UploadGate | None = None
        self.probes: dict[str, health.Probe] = {}
        self.ending = ending
        self.metrics = metrics_ or metrics.Metrics()
        self._reconciling: asyncio.Task | None = None
        self._following: set[asyncio.Task] = set()  # changes Glance makes in the background
        self.trusted, self.listener_tls, self.forwarded = trusted, listener_tls, forwarded
        self.tls_options: dict = {}
        self.addons = [forwarded, listener_tls]  # their connection hooks run after this addon's

    def load(self, loader) -> None:
        loader.add_option("glance_gate_config", str, "",
                          "Path to glance-gate's config.toml.")

    def configure(self, updated: set[str]) -> None:
        if "glance_gate_config" in updated:
            if not ctx.options.glance_gate_config:
                raise exceptions.OptionsError("glance_gate_config: set it to the path of config.toml")
            try:
                self.config = configuration.load(ctx.options.glance_gate_config)
                self.gate, self.probes = build_gate(self.config)
                self.tls_options = tls.options(self.config, ctx.options.confdir)
            except (ConfigError, OSError) as e:
                raise exceptions.OptionsError(f"glance-gate config: {e}") from None
            if self._reconciling:  # a new config while running
                self._reconcile()
            self.metrics.serve(self.config)
            if self.ending.audit:
                self.ending.audit.close()
            self.ending.audit = AuditTrail(self.config.audit.path)
        wanted = {**SAFE_OPTIONS, **self.tls_options}
        if self.config:  # mitmproxy's inactivity timeout of a connection, 600 s by default
            wanted["tcp_timeout"] = self.config.gateway.client_idle_timeout_seconds
        if unsafe := {k: v for k, v in wanted.items() if getattr(ctx.options, k) != v}:
            if ctx.options.ssl_insecure:
                log.warning("ssl_insecure=true ignored: Glance's certificate is always verified")
            ctx.options.update(**unsafe)
            tls.prune(ctx.options.confdir)

    def running(self) -> None:
        self.metrics.probe(self.probes)
        self._reconcile()

    def _reconcile(self) -> None:
        """The quota's reconciliation, off the request path, for the current gate."""
        assert self.gate
        if self._reconciling:
            self._reconciling.cancel()
        self._reconciling = asyncio.get_running_loop().create_task(
            self.gate.quota.reconcile_forever(metrics.reconciled))

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._following.add(task)
        task.add_done_callback(self._following.discard)

    def server_connected(self, data) -> None:
        wire.bulk_reads(data)

    def done(self) -> None:
        self.metrics.done()
        if self._reconciling:
            self._reconciling.cancel()
        if self.ending.audit:
            self.ending.audit.close()

    @fail_closed
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if "glance_gate" in flow.metadata:
            return  # already ended: by StripIdentity's failure, or ClientBounds
        assert self.config
        wire.drop_stale_upstream(flow, self.config.gateway.upstream_keepalive_seconds)
        exchange, invalid = self._begin(flow)
        self.forwarded.rewrite(flow)  # in this guard: an error here must not forward the client's headers
        if self.listener_tls.serving and not flow.client_conn.tls_established:
            self.ending.refuse(flow, exchange, rules.plaintext())
            return
        if invalid:
            # mitmproxy answers 400 itself and never forwards the request.
            exchange.fail(400, "bad_request", GATEWAY, invalid)
            self.ending.finish(exchange)
            return
        if exchange.route.kind == AMBIGUOUS:
            self.ending.refuse(flow, exchange, rules.ambiguous())
            return
        if exchange.route.is_upload:
            await self._upload(flow, exchange)
        elif exchange.route.is_import or (exchange.route.kind == CREATE and self.gate.quota.limits_images):
            # A small JSON body, buffered and decided in `request`.
            exchange.buffered = True
            if refusal := rules.check_import_body(exchange.declared):
                self.ending.refuse(flow, exchange, refusal)
        else:
            flow.request.stream = True
            if exchange.declared != 0:  # a body nothing reads
                wire.client_reads(flow, wire.BULK_READ)
        if self.config.identity.trusted_auth and not exchange.finished:
            await self.trusted.authenticate(flow, exchange)
        if exchange.finished or exchange.buffered:
            return
        if exchange.route.kind == CHANGE and is_uuid(exchange.route.image_id):
            assert self.gate
            exchange.change = await self.gate.quota.changing(exchange.route.image_id)
            if _location_add(flow) and (refusal := await self.gate.quota.location_add(exchange.change)):
                if not self.gate.quota.dry_run:
                    self.ending.refuse(flow, exchange, refusal)
                    return
                exchange.would_refuse = refusal  # counted and logged when it finishes
        exchange.forward()
        if exchange.route.is_upload:
            metrics.forwarding(exchange)
            # A grant that grows must not be crossed within one read (reservations.HEADROOM).
            growing = exchange.verdict.hold and exchange.verdict.hold.grows
            wire.client_reads(flow, wire.CLIENT_READ if growing else wire.BULK_READ)
            wire.release_client(flow)

    async def _upload(self, flow: http.HTTPFlow, exchange: Exchange) -> None:
        wire.hold_client(flow)
        exchange.verdict = verdict = await self._decide(flow, exchange)
        exchange.decision_seconds = time.monotonic() - exchange.started
        if verdict.refusal:
            self.ending.refuse(flow, exchange, verdict.refusal)
            return
        # Media types are case-insensitive, Glance's check is not: forward the canonical form.
        flow.request.headers["content-type"] = rules.OCTET_STREAM
        flow.request.stream = UploadStream(self.ending, flow, exchange, verdict,
                                           self._reservation(flow, exchange))

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.request.stream:  # its body was streamed, maybe read in bulk: the next one is decided first
            wire.client_reads(flow, wire.CLIENT_READ)
        exchange = flow.metadata.get("glance_gate")
        if not exchange or not exchange.buffered:
            return
        assert self.gate and self.config
        headers = flow.request.headers
        if exchange.route.is_import:
            body = ImportBody(flow.request.raw_content or b"", _joined(headers.get_all("content-encoding")),
                              _joined(headers.get_all("x-image-meta-store")))
            exchange.verdict = verdict = await self.gate.decide_import(
                exchange.route, headers.get_all("x-auth-token"), body)
        else:  # an image create, under an image quota; Glance reads the raw body
            exchange.verdict = verdict = await self.gate.decide_create(headers.get_all("x-auth-token"),
                                                                       flow.request.raw_content or b"")
        exchange.decision_seconds = time.monotonic() - exchange.started
        if verdict.refusal:
            headers, body = render(verdict.refusal, exchange.request_id, self.config.keystone.url)
            flow.response = http.Response.make(verdict.refusal.status, body, headers)
            exchange.refuse(verdict.refusal)
            self.ending.finish(exchange)
            return
        self._reservation(flow, exchange)
        exchange.body_complete = True
        exchange.forward()

    def _reservation(self, flow: http.HTTPFlow, exchange: Exchange) -> Reservation | None:
        assert exchange.verdict
        if not exchange.verdict.hold:
            return None
        cut = lambda refusal: self.ending.refuse(flow, exchange, refusal, mid_stream=True)  # noqa: E731
        failed = lambda where: self.ending.internal_error(flow, where, mid_stream=True)  # noqa: E731
        reservation = Reservation(flow, exchange, exchange.verdict.hold, cut, failed, metrics.reservation_settled)
        exchange.settle = reservation.settle
        return reservation

    def _begin(self, flow: http.HTTPFlow) -> tuple[Exchange, str]:
        """The request's Exchange, and why mitmproxy refuses its framing, if it does."""
        # Set before this hook, e.g. for Content-Length with Transfer-Encoding.
        invalid = flow.error.msg if flow.error else ""
        try:
            size = expected_http_body_size(flow.request)  # how mitmproxy will frame the body
        except ValueError as e:  # e.g. a malformed Content-Length
            size, invalid = None, invalid or str(e)
        exchange = Exchange(
            route=read_route(flow.request),
            method=flow.request.method,
            client=flow.client_conn.peername[0] if flow.client_conn.peername else "",
            request_id=request_id(),
            declared=size if size is not None and size >= 0 else None,
        )
        self.ending.begin(exchange, flow)
        return exchange, invalid

    async def _decide(self, flow: http.HTTPFlow, exchange: Exchange) -> Verdict:
        assert self.gate
        headers = flow.request.headers
        return await self.gate.decide(UploadRequest(
            route=exchange.route,
            tokens=headers.get_all("x-auth-token"),
            content_type=headers.get("content-type"),
            content_length=exchange.declared,
            chunked=exchange.declared is None,
            image_size=_raw(headers.get_all("x-openstack-image-size")),
        ))

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        assert flow.response
        exchange = flow.metadata.get("glance_gate")
        # A change's small answer is held until its bytes are in the ledger (`response`).
        flow.response.stream = not (exchange and exchange.change)
        if flow.response.stream and exchange and not (exchange.route.is_upload or exchange.route.is_import):
            wire.pump(flow)  # nothing of it is read: a download moves at the sockets' speed
        if self.ending.draining:
            flow.response.headers["connection"] = "close"

    async def response(self, flow: http.HTTPFlow) -> None:
        wire.upstream_idle(flow)
        exchange = flow.metadata.get("glance_gate")
        try:
            if exchange and exchange.change and flow.response and flow.response.status_code < 300:
                assert self.gate
                if flow.response.status_code == 202:  # accepted: Glance's task makes the change later
                    self._spawn(self.gate.quota.follow(exchange.change))
                else:
                    await self.gate.quota.changed(exchange.change)
        finally:  # Glance has answered: the answer is counted whatever the ledger did
            if exchange and not exchange.finished and flow.response:
                exchange.answer(flow.response.status_code, flow.response.headers.get("x-openstack-request-id"))
                self.ending.finish(exchange)
                if exchange.route.is_import and exchange.upstream_status == 202 and exchange.verdict \
                        and exchange.verdict.import_method == "glance-direct":
                    assert self.gate
                    self._spawn(self.gate.quota.watch_import(exchange.route.image_id))  # staged bytes count until it ends

    def error(self, flow: http.HTTPFlow) -> None:
        exchange = flow.metadata.get("glance_gate")
        if not exchange or exchange.finished:
            return
        detail = flow.error.msg if flow.error else ""
        if detail == wire.TRAILERS_REFUSED:
            exchange.fail(400, "bad_request", GATEWAY, detail)
        elif flow.response is None and flow.client_conn.state & ConnectionState.CAN_READ:
            # The client is still there, so Glance failed (refused, closed or died
            # mid-upload): mitmproxy answers 502 once this hook returns.
            exchange.fail(502, "upstream_unavailable", UPSTREAM, detail)
        else:
            exchange.fail(CLIENT_CLOSED, "client_closed", GATEWAY, detail)
        self.ending.finish(exchange)


def read_route(request: http.Request) -> Route:
    """The route Glance will take the request for, read from what reaches it:
    the target's bytes, and its headers' environ values."""
    def environ(name: bytes) -> str | None:
        return wsgi_header([value for key, value in request.headers.fields if key.lower() == name])
    return classify(request.method, request.data.path.decode("latin-1"),
                    environ(b"accept"), environ(b"content-type"))


def trailers_refusal() -> bytes:
    refusal = Refusal(400, "bad_request", f"{wire.TRAILERS_REFUSED}.")
    return wire.raw_response(refusal.status, *render(refusal, request_id()))


def _location_add(flow: http.HTTPFlow) -> bool:
    """A change route's location add (POST /v2/images/{id}/locations): the
    only change route on that path."""
    api = api_path(flow.request.path, ", ".join(flow.request.headers.get_all("accept"))) or ""
    return _LOCATIONS.fullmatch(api) is not None


def _joined(values: list[str]) -> str | None:
    """A header as gunicorn hands it to Glance: duplicates joined by ","."""
    return ",".join(values) if values else None


def _raw(values: list[str]) -> bytes | None:
    """A header's bytes as the client sent them (mitmproxy decodes UTF-8 with
    surrogateescape), duplicates joined by "," as gunicorn joins them for Glance."""
    return None if (joined := _joined(values)) is None else joined.encode("utf-8", "surrogateescape")


def build_gate(config: configuration.Config) -> tuple[UploadGate, dict[str, health.Probe]]:
    """The gate, and the probes of what its decisions need."""
    keystone, glance, quota = services(config)
    quota.near_limit = metrics.near_limit
    gate = UploadGate(
        config,
        TokenValidator(modes.checker(config, keystone), TokenCache(config.keystone.cache_seconds),
                       metrics.token_validated),
        glance,
        quota,
    )
    return gate, health.probes(config, keystone, glance, quota.ledger)
