"""addons/metrics.py: what an operator reads at /metrics when a request
finishes, a reservation settles, a project nears its limit, and what the
dependency probe says."""

from __future__ import annotations

import asyncio

import httpx

from addons import metrics
from addons.exchange import Exchange
from policy import decision as rules
from policy.refusal import request_id
from policy.exceptions import Misconfigured, Unavailable
from policy.routes import Route
from tests.support.fakes import config
from tests.support.stack import free_port
from tests.support.addon_flows import IMAGE_ID, counted, sample, settings


def exchange(route: str = "upload") -> Exchange:
    return Exchange(Route(route, IMAGE_ID), "PUT", "127.0.0.1", request_id(), declared=2048)


def test_a_refusal_is_counted_by_its_status_and_reason():
    ex = exchange()
    ex.refuse(rules.quota_exceeded(rules.QuotaFigures("image_size_total", "projQ", 1, 2, 3)))
    before, quota = counted(413, "quota"), sample("glance_gate_quota_rejections_total")
    durations = sample("glance_gate_request_duration_seconds_count", route="upload")
    metrics.finished(ex)
    assert counted(413, "quota") == before + 1
    assert sample("glance_gate_quota_rejections_total") == quota + 1
    assert sample("glance_gate_request_duration_seconds_count", route="upload") == durations + 1


def test_an_upload_is_in_flight_while_it_streams_and_its_bytes_count_once_glance_accepts():
    ex = exchange()
    in_flight, sent = sample("glance_gate_uploads_in_flight"), sample("glance_gate_upload_bytes_total")
    sizes = sample("glance_gate_upload_size_bytes_count")
    ex.forward()
    metrics.forwarding(ex)
    assert sample("glance_gate_uploads_in_flight") == in_flight + 1
    ex.transferred = 2048
    ex.answer(204, None)
    metrics.finished(ex)
    assert sample("glance_gate_uploads_in_flight") == in_flight
    assert sample("glance_gate_upload_bytes_total") == sent + 2048
    assert sample("glance_gate_upload_size_bytes_count") == sizes + 1


def test_an_upload_glance_refused_counts_its_bytes_sent_not_its_size():
    ex = exchange()
    ex.forward()
    metrics.forwarding(ex)
    ex.transferred = 10
    ex.answer(410, None)
    sizes = sample("glance_gate_upload_size_bytes_count")
    metrics.finished(ex)
    assert sample("glance_gate_upload_size_bytes_count") == sizes


def test_settled_reservations_are_counted_by_outcome():
    before = sample("glance_gate_quota_reservations_total", outcome="committed")
    metrics.reservation_settled("committed")
    assert sample("glance_gate_quota_reservations_total", outcome="committed") == before + 1


def test_a_project_near_its_limit_is_shown_until_it_is_not():
    metrics.near_limit("projN", "image_size_total", 0.9)
    assert sample("glance_gate_quota_near_limit", project="projN", resource="image_size_total") == 0.9
    metrics.near_limit("projN", "image_size_total", None)
    assert all(s.labels["project"] != "projN" for s in metrics.quota_near_limit.collect()[0].samples)


def test_connections_closed_by_a_bound_are_counted_by_reason():
    before = sample("glance_gate_connections_refused_total", reason="head_deadline")
    metrics.connection_refused("head_deadline")
    assert sample("glance_gate_connections_refused_total", reason="head_deadline") == before + 1


def test_the_probe_says_which_dependency_is_down_or_misconfigured():
    async def ok():
        pass

    async def down():
        raise Unavailable("glance", "connection refused")

    async def refused():
        raise Misconfigured("keystone", "401 for the service user", "check keystone.password")

    async def probe():
        m = metrics.Metrics(serve=False)
        m.probe({"redis": ok, "glance": down, "keystone": refused})
        await asyncio.sleep(0.05)
        m.done()
    asyncio.run(probe())
    assert sample("glance_gate_dependency_up", dependency="redis") == 1
    assert sample("glance_gate_dependency_up", dependency="glance") == 0
    assert sample("glance_gate_dependency_misconfigured", dependency="glance") == 0
    assert sample("glance_gate_dependency_misconfigured", dependency="keystone") == 1


def test_metrics_are_served_at_the_configured_address():
    port = free_port()
    metrics.Metrics().serve(settings(config(-1), metrics=("127.0.0.1", port)))
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'glance_gate_build_info{mitmproxy="12.3.1",version="0.1.0"} 1.0' in text
