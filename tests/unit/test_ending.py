"""The ending service (addons/ending.py): how every request ends, whichever
addon ends it. What a client and an operator see: the answer, the count, the
audit line, the reservation settled, the drain's in-flight count."""

from __future__ import annotations

import logging

import pytest

from addons.exchange import Exchange
from policy import decision as rules
from policy.refusal import request_id
from policy.routes import Route
from tests.support.addon_flows import (IMAGE_ID, Answers, audit, counted, glance_gate, run, sample, upload,
                                    upload_headers)


@pytest.fixture
def answers(monkeypatch) -> Answers:
    return Answers(monkeypatch)


def begun(gg, flow, kind: str = "upload") -> Exchange:
    exchange = Exchange(Route(kind, IMAGE_ID), flow.request.method, "127.0.0.1", request_id())
    gg.ending.begin(exchange, flow)
    return exchange


def test_a_refusal_answers_in_glances_shape_kills_the_flow_and_is_counted_and_audited_once(tmp_path, answers):
    gg = glance_gate(tmp_path)
    ending = gg.ending
    flow = upload(upload_headers(expect="100-continue"))
    before = counted(401, "token")

    def refuse():
        exchange = begun(gg, flow)
        ending.refuse(flow, exchange, rules.bad_token("expired"))
        return exchange
    exchange = run(lambda: _async(refuse))

    [(status, headers, body)] = answers.sent
    assert status == 401 and body["code"] == 401 and body["title"] == "Unauthorized"
    assert headers["WWW-Authenticate"] == 'Keystone uri="http://keystone"'
    assert headers["X-Openstack-Request-Id"] == exchange.request_id
    assert "expect" not in flow.request.headers, "no 100 Continue for a refusal"
    assert flow.error and flow.error.msg == "Connection killed.", "nothing goes upstream"
    assert counted(401, "token") == before + 1
    assert [(r["status"], r["reason"]) for r in audit(tmp_path)] == [(401, "token")]
    assert ending.in_flight == 0


def test_ending_a_request_no_hook_has_classified_yet_leaves_nothing_in_flight(tmp_path, answers):
    """ClientBounds ends a request before the gate begins it: a drain must not wait for it."""
    gg = glance_gate(tmp_path)
    flow = upload({"x-auth-token": "tok"}, path="/v2/images")
    flow.request.method = "GET"
    run(lambda: _async(lambda: gg.ending.end(flow, rules.too_many_connections("192.0.2.1", 2))))
    assert [status for status, _, _ in answers.sent] == [429]
    assert flow.metadata["glance_gate"].reason == "too_many_connections"
    assert flow.error and flow.error.msg == "Connection killed."
    assert gg.ending.in_flight == 0


def test_an_internal_error_is_503_internal_with_its_traceback_logged(tmp_path, answers, caplog):
    gg = glance_gate(tmp_path)
    flow = upload(upload_headers())
    before = counted(503, "internal")

    def fail():
        begun(gg, flow)
        try:
            raise KeyError("id")
        except KeyError:
            gg.ending.internal_error(flow, "a step")
    with caplog.at_level(logging.ERROR, "glance_gate"):
        run(lambda: _async(fail))

    [(status, _, body)] = answers.sent
    assert status == 503 and "not forwarded" in body["message"]
    assert counted(503, "internal") == before + 1
    assert "internal error in a step" in caplog.text and "KeyError: 'id'" in caplog.text
    assert flow.error and flow.error.msg == "Connection killed."


def test_mid_stream_the_upload_is_cut_not_killed(tmp_path, answers):
    """wire.abort tears the upstream down from the stream callback; killing the
    flow there would let mitmproxy end the body well-formed."""
    gg = glance_gate(tmp_path)
    flow = upload(upload_headers())

    def cut():
        exchange = begun(gg, flow)
        gg.ending.end(flow, rules.internal(), mid_stream=True)
        return exchange
    exchange = run(lambda: _async(cut))
    assert (exchange.status, exchange.reason) == (503, "internal")
    assert [status for status, _, _ in answers.sent] == [503]
    assert flow.error is None


def test_finish_settles_the_reservation_once_and_counts_the_final_status(tmp_path):
    gg = glance_gate(tmp_path)
    flow = upload(upload_headers())
    settled = []
    exchange = begun(gg, flow)
    exchange.settle = lambda: settled.append(exchange.status)
    exchange.answer(204, "req-glance")
    before = sample_upstream()
    gg.ending.finish(exchange)
    assert settled == [204]
    assert sample_upstream() == before + 1
    assert [r["request_id"] for r in audit(tmp_path)] == ["req-glance"]
    assert gg.ending.in_flight == 0


def sample_upstream() -> float:
    return sample("glance_gate_requests_total", method="PUT", route="upload", code="204", reason="ok",
                  source="upstream")


async def _async(call):
    return call()
