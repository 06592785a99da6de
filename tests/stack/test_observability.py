"""Metrics, dashboards and alert rules against a real Prometheus: scripted
traffic makes every status code, Prometheus scrapes the gateways, and then
every dashboard query returns data and every code's counter equals what was
sent. Also the audit trail of the same traffic."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections import Counter

import httpx
import pytest

from tests.support.stack import REPO, free_port, start_gateway, stop

MiB = 1024 * 1024
QUOTA = 2 * MiB
OCTET = "application/octet-stream"


@pytest.fixture(scope="module")
def observed(stack, tmp_path_factory):
    """Two fresh gateways (one with Keystone unreachable, for 503) and a
    Prometheus scraping both every second."""
    tmp = tmp_path_factory.mktemp("observed")
    gw = start_gateway(tmp, stack, quota={stack.user("userB")["project_id"]: QUOTA},
                       quota_settings={"reconcile_seconds": 1})
    broken = start_gateway(tmp, stack, keystone=f"http://127.0.0.1:{free_port()}")
    port = free_port()
    targets = [g.metrics_url.removeprefix("http://").removesuffix("/metrics") for g in (gw, broken)]
    subprocess.run([str(REPO / "scripts" / "prometheus"), "up", "--port", str(port), "--dir", str(tmp / "prom"),
                    "--interval", "1s", *targets], check=True, timeout=60)
    yield gw, broken, f"http://127.0.0.1:{port}"
    subprocess.run([str(REPO / "scripts" / "prometheus"), "down", "--dir", str(tmp / "prom")], timeout=30)
    stop(gw.proc)
    stop(broken.proc)


def drive(stack, gw, broken, near: list[str]) -> Counter:
    """Sends uploads with every outcome of the spec's table; returns how many of each."""
    sent: Counter = Counter()
    a, b = stack.token("userA"), stack.token("userB")
    client, dead = httpx.Client(base_url=gw.url, timeout=60), httpx.Client(base_url=broken.url, timeout=60)

    def put(image_id, token, body=b"data", content_type=OCTET, via=client, expect=None):
        headers = {"Content-Type": content_type, **({"X-Auth-Token": token} if token else {})}
        r = via.put(f"/v2/images/{image_id}/file", content=body, headers=headers)
        assert r.status_code == expect, r.text
        sent[expect] += 1

    for _ in range(3):
        put(stack.create_image(), a, b"x" * 100_000, expect=204)
    put("nope", a, expect=400)
    put(stack.create_image(formats=False), a, expect=400)
    put(stack.create_image(), None, expect=401)
    put(stack.create_image(), "forged", expect=401)
    shared = stack.create_image(visibility="shared")
    stack.http.post(f"{stack.glance}/v2/images/{shared}/members",
                    json={"member": stack.user("userB")["project_id"]}, headers={"X-Auth-Token": a})
    put(shared, b, expect=403)
    put(str(uuid.uuid4()), a, expect=404)
    put(stack.create_image(visibility="private"), b, expect=404)
    active = stack.create_image()
    put(active, a, expect=204)
    put(active, a, expect=409)
    put(stack.create_image(user="userB"), b, b"x" * (QUOTA + 1), expect=413)
    put(stack.create_image(user="userB"), b, iter([b"x" * MiB] * 3), expect=413)  # cut mid-stream
    put(stack.create_image(), a, content_type="text/plain", expect=415)
    put(stack.create_image(), a, b"", expect=500)
    put(stack.create_image(), a, via=dead, expect=503)
    gone = stack.create_image()
    put(gone, a, stack.body_deleting_image_midway(gone), expect=410)
    # projB past quota.warn_ratio (0.8) of its limit, whatever it stores already:
    # the near-limit gauge shows it (deleted again by `traffic`)
    if (missing := int(0.9 * QUOTA) - stack.usage(stack.user("userB")["project_id"])) > 0:
        near.append(stack.create_image(user="userB"))
        put(near[-1], b, b"x" * missing, expect=204)
    assert client.get("/v2/images", headers={"X-Auth-Token": a}).status_code == 200  # route "other"
    staged = stack.create_image()
    assert client.put(f"/v2/images/{staged}/stage", content=b"staged",
                      headers={"Content-Type": OCTET, "X-Auth-Token": a}).status_code == 204
    r = client.post(f"/v2/images/{staged}/import", json={"method": {"name": "glance-direct"}},
                    headers={"X-Auth-Token": a})
    assert r.status_code == 202, r.text
    return sent


def query(prom: str, expr: str) -> list:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["data"]["result"]


def wait_for(prom: str, expr: str, want: float, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = query(prom, expr)
        if result and float(result[0]["value"][1]) == want:
            return
        time.sleep(0.5)
    pytest.fail(f"{expr} did not reach {want} in Prometheus: {query(prom, expr)}")


@pytest.fixture(scope="module")
def traffic(stack, observed):
    gw, broken, prom = observed
    near: list[str] = []
    sent = drive(stack, gw, broken, near)
    wait_for(prom, 'sum(glance_gate_requests_total{route="upload"})', sum(sent.values()))
    wait_for(prom, "sum(glance_gate_imports_total)", 1)
    # projB, whose quota the traffic used, reconciled since
    wait_for(prom, "count(sum(glance_gate_quota_reconcile_duration_seconds_count) >= 1)", 1)
    yield sent
    for image_id in near:
        stack.delete_image(image_id, user="userB")


def test_each_codes_counter_equals_the_requests_sent(observed, traffic):
    _, _, prom = observed
    counted = {int(r["metric"]["code"]): float(r["value"][1]) for r in
               query(prom, 'sum by (code) (glance_gate_requests_total{route="upload"})')}
    assert counted == {code: float(n) for code, n in traffic.items()}
    reasons = {r["metric"]["reason"]: float(r["value"][1]) for r in
               query(prom, 'sum by (reason) (glance_gate_requests_total{route="upload", code=~"4..|5.."})')}
    assert reasons["quota"] == 2 and reasons["empty_body"] == 1 and reasons["gone"] == 1
    assert reasons["upstream_unavailable"] == 1 and reasons["token"] == 2
    assert query(prom, "sum(glance_gate_quota_rejections_total)")[0]["value"][1] == "2"
    assert query(prom, 'sum(glance_gate_requests_total{route="other", code="200"})')[0]["value"][1] == "1"
    assert query(prom, "sum(glance_gate_uploads_in_flight)")[0]["value"][1] == "0"
    imports = query(prom, 'sum by (method, reason) (glance_gate_imports_total)')
    assert [(r["metric"]["method"], r["metric"]["reason"], r["value"][1]) for r in imports] == [
        ("glance-direct", "ok", "1")]


def test_every_dashboard_panel_has_data(observed, traffic):
    _, _, prom = observed
    dashboard = json.loads((REPO / "dashboards" / "glance-gate.json").read_text())
    exprs = [(panel["title"], target["expr"].replace("$job", ".+").replace("$__rate_interval", "1m"))
             for panel in dashboard["panels"] for target in panel["targets"]]
    # rate() has data once two scrapes follow the traffic: poll, however slow the scrapes are.
    deadline = time.monotonic() + 30
    while (empty := [(title, expr) for title, expr in exprs if not query(prom, expr)]) \
            and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not empty


def test_dependency_health_shows_keystone_down(observed, traffic):
    _, broken, prom = observed
    up = {(r["metric"]["instance"], r["metric"]["dependency"]): r["value"][1]
          for r in query(prom, "glance_gate_dependency_up")}
    broken_instance = broken.metrics_url.removeprefix("http://").removesuffix("/metrics")
    assert up[(broken_instance, "keystone")] == "0"
    assert up[(broken_instance, "glance")] == "1"


def test_audit_trail_answers_who_uploaded_what(stack, observed, traffic):
    gw, _, _ = observed
    records = [r for r in gw.audit() if r["route"] == "upload"]
    assert Counter(r["status"] for r in records) == traffic - Counter({503: traffic[503]})
    ok = [r for r in records if r["status"] == 204]
    users = {r["user_id"] for r in ok}
    assert stack.user("userA")["user_id"] in users
    assert users <= {stack.user("userA")["user_id"], stack.user("userB")["user_id"]}
    assert all(r["image_owner"] == stack.user("userA" if r["user_id"] == stack.user("userA")["user_id"] else "userB")
               ["project_id"] for r in ok)
    cut = [r for r in records if r["status"] == 413 and r["bytes_declared"] is None]
    assert len(cut) == 1 and 0 < cut[0]["bytes_transferred"] <= QUOTA + MiB
    assert not any(stack.token("userA") in json.dumps(r) for r in records)
    assert set(records[0]) == {"timestamp", "request_id", "route", "user_id", "project_id", "image_id",
                               "image_owner", "bytes_declared", "bytes_transferred", "status", "reason",
                               "source", "upstream_status", "duration_seconds", "client"}
