"""GlanceGate (addons/glance_gate.py) without the cloud, on mitmproxy's own test
helpers (taddons, tflow): its hooks, UploadStream, the refusal path and the
configure step. The policy is the real gate and quota; only its dependencies
(the token check, Glance) give fixed answers (tests/support/fakes.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from mitmproxy import exceptions, hooks, http
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.addons.tlsconfig import TlsConfig
from mitmproxy.test import taddons

from addons import wire
from addons.glance_gate import SAFE_OPTIONS, GlanceGate, UploadStream
from policy.decision import Image
from tests.support.addon_flows import (IMAGE_ID, QUEUED, audit, counted, glance_gate, new_gate, run, upload,
                                      upload_headers, write_config)


def test_a_refused_upload_is_answered_at_the_gateway_and_finished_once(tmp_path):
    gg = glance_gate(tmp_path)
    flow = upload(upload_headers(**{"x-auth-token": "", "expect": "100-continue"}))
    del flow.request.headers["x-auth-token"]
    before = counted(401, "token")

    async def hooks():
        await gg.requestheaders(flow)
        await gg.response(flow)  # what comes after a refusal must not count it again
        gg.error(flow)
    run(hooks)

    exchange = flow.metadata["glance_gate"]
    assert (exchange.status, exchange.reason, exchange.source) == (401, "token", "gateway")
    assert flow.error and flow.error.msg == "Connection killed.", "a refused flow is killed: nothing goes upstream"
    assert "expect" not in flow.request.headers, "no 100 Continue for a refusal"
    assert not isinstance(flow.request.stream, UploadStream)
    assert counted(401, "token") == before + 1
    [record] = audit(tmp_path)
    assert (record["status"], record["reason"], record["image_id"]) == (401, "token", IMAGE_ID)


@pytest.mark.parametrize("headers, image, status, reason", [
    (upload_headers(**{"content-type": "text/plain"}), QUEUED, 415, "content_type"),
    (upload_headers(length=0), QUEUED, 500, "empty_body"),
    (upload_headers(), None, 404, "not_found"),
    (upload_headers(), Image(IMAGE_ID, "projB", "queued", "raw", "bare"), 403, "forbidden"),
    (upload_headers(), Image(IMAGE_ID, "projA", "active", "raw", "bare"), 409, "status"),
])
def test_each_refusal_of_the_decision_reaches_the_client_as_the_spec_says(tmp_path, headers, image, status, reason):
    gg = glance_gate(tmp_path, image=image)
    flow = upload(headers)
    run(lambda: gg.requestheaders(flow))
    assert (flow.metadata["glance_gate"].status, flow.metadata["glance_gate"].reason) == (status, reason)
    assert flow.error and flow.error.msg == "Connection killed."
    assert [r["status"] for r in audit(tmp_path)] == [status]


def test_an_allowed_upload_streams_through_upload_stream_with_the_canonical_media_type(tmp_path):
    gg = glance_gate(tmp_path)
    flow = upload(upload_headers(**{"content-type": "Application/Octet-Stream; x=1"}))
    run(lambda: gg.requestheaders(flow))
    exchange = flow.metadata["glance_gate"]
    assert not exchange.finished and exchange.forwarded_at is not None
    assert flow.error is None
    assert isinstance(flow.request.stream, UploadStream)
    assert flow.request.headers["content-type"] == "application/octet-stream"
    assert audit(tmp_path) == [], "audited when it finishes, not before"


@pytest.mark.parametrize("limit, length, reads", [
    (None, 1024, "bulk"),  # no quota
    (None, None, "bulk"),
    (10_000, 1024, "bulk"),  # granted whole
    (10_000, None, "client"),  # granted in steps: no read may cross one
])
def test_an_upload_body_is_read_in_bulk_unless_its_grant_grows(tmp_path, monkeypatch, limit, length, reads):
    asked = []
    monkeypatch.setattr(wire, "client_reads", lambda flow, size: asked.append(size))
    gg = glance_gate(tmp_path, **({"limit": limit} if limit else {}))
    flow = upload(upload_headers(length=length))
    run(lambda: gg.requestheaders(flow))
    assert asked == [{"bulk": wire.BULK_READ, "client": wire.CLIENT_READ}[reads]]
    run(lambda: gg.request(flow))  # the body has streamed: the next request's is decided first
    assert asked[1:] == [wire.CLIENT_READ]


def test_upload_stream_forwards_and_counts_every_byte_and_never_sends_an_empty_chunk(tmp_path):
    gg = glance_gate(tmp_path)
    flow = upload(upload_headers(length=None))
    run(lambda: gg.requestheaders(flow))
    stream, exchange = flow.request.stream, flow.metadata["glance_gate"]
    assert stream(b"a" * 100) == b"a" * 100
    assert stream(b"b" * 28) == b"b" * 28
    assert exchange.transferred == 128
    # b"" to a chunked upstream would be the terminating chunk: the end is [].
    assert stream(b"") == []
    assert exchange.body_complete and not exchange.finished


def test_upload_stream_cuts_a_chunked_body_that_turns_out_empty(tmp_path):
    gg = glance_gate(tmp_path)
    flow = upload(upload_headers(length=None))
    before = counted(500, "empty_body")

    async def hooks():
        await gg.requestheaders(flow)
        assert flow.request.stream(b"") == []
        gg.error(flow)  # mitmproxy's own error for the cut connection: already finished
    run(hooks)

    exchange = flow.metadata["glance_gate"]
    assert (exchange.status, exchange.reason) == (500, "empty_body")
    assert not exchange.body_complete
    assert counted(500, "empty_body") == before + 1
    assert [r["reason"] for r in audit(tmp_path)] == ["empty_body"]


def test_upload_stream_cuts_a_body_that_outgrows_its_declared_size_under_the_quota(tmp_path):
    gg = glance_gate(tmp_path, limit=10_000, usage=9_000)
    flow = upload(upload_headers(length=None, **{"x-openstack-image-size": "600"}))

    async def hooks():
        await gg.requestheaders(flow)
        stream = flow.request.stream
        assert stream(b"x" * 600) == b"x" * 600  # what was reserved passes
        assert stream(b"x") == [], "not one byte past the reservation is forwarded"
        assert stream(b"x") == [], "and nothing after the cut"
    run(hooks)

    exchange = flow.metadata["glance_gate"]
    assert (exchange.status, exchange.reason, exchange.transferred) == (413, "quota", 600)
    [record] = audit(tmp_path)
    assert (record["status"], record["bytes_transferred"]) == (413, 600)


def test_an_upload_over_the_quota_is_refused_before_it_streams(tmp_path):
    gg = glance_gate(tmp_path, limit=10_000, usage=9_500)
    flow = upload(upload_headers(length=1024))
    run(lambda: gg.requestheaders(flow))
    assert (flow.metadata["glance_gate"].status, flow.metadata["glance_gate"].reason) == (413, "quota")
    assert not isinstance(flow.request.stream, UploadStream)


def test_glance_answer_finishes_the_upload_once_with_its_status(tmp_path):
    gg = glance_gate(tmp_path)
    flow = upload(upload_headers(length=4))

    async def hooks():
        await gg.requestheaders(flow)
        assert flow.request.stream(b"data") == b"data"
        flow.request.stream(b"")
        flow.response = http.Response.make(204, b"", {"x-openstack-request-id": "req-glance-1"})
        gg.responseheaders(flow)
        await gg.response(flow)
        await gg.response(flow)
    run(hooks)

    exchange = flow.metadata["glance_gate"]
    assert (exchange.status, exchange.source, exchange.request_id) == (204, "upstream", "req-glance-1")
    [record] = audit(tmp_path)
    assert (record["status"], record["bytes_transferred"], record["request_id"]) == (204, 4, "req-glance-1")


def test_a_delete_frees_its_bytes_before_its_answer_is_sent(tmp_path):
    """The image's bytes are read before the DELETE is forwarded; Glance's 204
    is held (not streamed) until they are out of the owner's usage."""
    gg = glance_gate(tmp_path, limit=10_000, usage=9_500)
    glance = gg.gate.glance
    flow = upload({"x-auth-token": "tok"}, path=f"/v2/images/{IMAGE_ID}")
    flow.request.method = "DELETE"

    async def hooks():
        _, refused = await gg.gate.quota.reserve("projA", 1024)
        glance.stored = ("projA", 9_000)
        await gg.requestheaders(flow)
        glance.stored = None  # deleted
        flow.response = http.Response.make(204, b"")
        gg.responseheaders(flow)
        streamed = flow.response.stream
        await gg.response(flow)
        return refused, streamed, await gg.gate.quota.reserve("projA", 1024)
    refused, streamed, (hold, refusal) = run(hooks)

    assert refused.status == 413 and streamed is False
    assert refusal is None and hold.others == 500
    assert flow.metadata["glance_gate"].route.kind == "change"


def test_other_requests_stream_through_untouched(tmp_path):
    gg = glance_gate(tmp_path)
    flow = upload({"x-auth-token": "tok"}, path=f"/v2/images/{IMAGE_ID}")
    flow.request.method = "GET"
    run(lambda: gg.requestheaders(flow))
    assert flow.request.stream is True and flow.error is None
    assert not flow.metadata["glance_gate"].finished
    assert audit(tmp_path) == []


async def load(gg: GlanceGate, conf: Path | str, confdir: Path, **options) -> dict:
    """Loads the addon as mitmdump does, with --set glance_gate_config=conf
    and the given proxy options; returns the options it leaves."""
    with taddons.context(Proxyserver(), TlsConfig()) as tctx:
        tctx.options.update(confdir=str(confdir), **options)
        tctx.options.update_defer(glance_gate_config=str(conf))  # until the addon declares it
        tctx.master.addons.add(gg)
        # As the master does at start: configure with every option.
        tctx.master.addons.invoke_addon_sync(gg, hooks.ConfigureHook(set(tctx.options.keys())))
        return {key: getattr(tctx.options, key) for key in [*SAFE_OPTIONS, "tcp_timeout", "ssl_insecure",
                                                              "tls_version_client_min", "tls_version_server_min"]}


def test_configure_forces_the_options_the_policy_relies_on(tmp_path):
    conf = write_config(tmp_path / "config.toml", gateway="client_idle_timeout_seconds = 42")
    gg = new_gate()
    with pytest.raises(exceptions.OptionsError, match="glance_gate_config"):
        asyncio.run(load(gg, "", tmp_path))  # no config: never a proxy without its policy
    options = asyncio.run(load(gg, conf, tmp_path, http2=True, connection_strategy="eager", tcp_timeout=600,
                               tls_version_client_min="TLS1"))
    assert options == {**SAFE_OPTIONS, "tcp_timeout": 42, "ssl_insecure": False,
                       "tls_version_client_min": "TLS1_2", "tls_version_server_min": "TLS1_2"}
    gg.done()


def test_ssl_insecure_is_overridden(tmp_path):
    """mitmdump --set ssl_insecure=true would skip Glance's certificate check."""
    conf = write_config(tmp_path / "config.toml", "https://127.0.0.1:2")
    gg = new_gate()
    assert asyncio.run(load(gg, conf, tmp_path, ssl_insecure=True))["ssl_insecure"] is False
    gg.done()


def test_configure_refuses_a_config_naming_the_key(tmp_path):
    conf = tmp_path / "config.toml"
    conf.write_text('[gateway]\nlisten = "127.0.0.1:1"\nupstream = "http://127.0.0.1:2"\n')
    with pytest.raises(exceptions.OptionsError, match=r"gateway\.metrics"):
        asyncio.run(load(new_gate(), conf, tmp_path))
