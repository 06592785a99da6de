"""One request's record (addons/exchange.py): how each way a request ends
fills it (what metrics, the audit trail and the quota ledger read), and that it
stays a leaf: it calls nothing and imports neither mitmproxy nor another addon."""

from __future__ import annotations

import subprocess
import sys

import pytest

from addons.exchange import CLIENT_CLOSED, GATEWAY, UPSTREAM, Exchange
from policy import decision as rules
from policy.gate import Verdict
from policy.refusal import QuotaFigures, request_id
from policy.routes import Route

IMAGE_ID = "0cb9328d-dd8c-41bb-b378-404b854b93b1"
FIGURES = QuotaFigures("image_size_total", "projA", 900, 1000, 200)


def exchange(kind: str = "upload") -> Exchange:
    return Exchange(Route(kind, IMAGE_ID), "PUT", "192.0.2.5", request_id())


def test_a_request_begun_is_not_finished_and_has_no_duration_yet():
    ex = exchange()
    assert not ex.finished and ex.status is None and ex.ended is None
    with pytest.raises(AssertionError):
        ex.duration  # noqa: B018  (a duration of a request still running would be a lie)


def test_a_refusal_is_the_gateways_final_status_with_its_quota_figures():
    ex = exchange()
    ex.refuse(rules.quota_exceeded(FIGURES))
    assert ex.finished
    assert (ex.status, ex.reason, ex.source) == (413, "quota", GATEWAY)
    assert ex.figures == FIGURES
    assert ex.upstream_status is None
    assert ex.duration >= 0


def test_glances_answer_is_the_upstreams_status_and_request_id():
    ex = exchange()
    ex.answer(204, "req-glance-1")
    assert (ex.status, ex.reason, ex.source, ex.upstream_status) == (204, "ok", UPSTREAM, 204)
    assert ex.request_id == "req-glance-1", "the audit line matches Glance's logs"
    assert ex.finished and ex.duration >= 0

    ex = exchange()
    ours = ex.request_id
    ex.answer(409, None)
    assert (ex.status, ex.reason, ex.upstream_status) == (409, "status", 409)
    assert ex.request_id == ours, "no id from Glance: the gateway's stays"

    ex = exchange()
    ex.answer(502, None)
    assert ex.reason == "upstream_error"


def test_a_failure_without_a_decision_keeps_mitmproxys_message():
    ex = exchange()
    ex.fail(CLIENT_CLOSED, "client_closed", GATEWAY, "client disconnected")
    assert (ex.status, ex.reason, ex.source, ex.detail) == (499, "client_closed", GATEWAY, "client disconnected")
    assert ex.finished and ex.figures is None


def test_only_an_upload_forwarded_upstream_is_a_streaming_upload():
    ex = exchange("upload")
    assert not ex.streaming_upload, "decided from its headers, not yet forwarded"
    ex.forward()
    assert ex.streaming_upload and ex.forwarded_at is not None
    ex = exchange("stage")
    ex.forward()
    assert ex.streaming_upload
    ex = exchange("import")
    ex.forward()
    assert not ex.streaming_upload


def test_the_dry_run_refusal_passed_is_the_verdicts_or_else_the_changes_own():
    refusal = rules.quota_exceeded(FIGURES)
    ex = exchange()
    assert ex.quota_would_refuse is None
    ex.verdict = Verdict(would_refuse=refusal)
    assert ex.quota_would_refuse is refusal
    ex = exchange("change")  # a location add has no verdict
    ex.would_refuse = refusal
    assert ex.quota_would_refuse is refusal


def test_the_record_never_settles_itself_and_imports_no_other_addon():
    """The settle step is the caller's (the ending service calls it once, when
    the request finishes: test_ending.py); the record only holds it."""
    settled = []
    for end in (lambda ex: ex.refuse(rules.internal()), lambda ex: ex.answer(201, None),
                lambda ex: ex.fail(502, "upstream_unavailable", UPSTREAM, "refused")):
        ex = exchange()
        ex.settle = lambda: settled.append(True)
        end(ex)
        assert ex.finished
    assert settled == []
    code = ("import sys, addons.exchange; "
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('mitmproxy', 'addons')); "
            "print(loaded); sys.exit(loaded != ['addons', 'addons.exchange'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
