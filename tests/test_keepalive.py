"""Stale upstream connections never cost a request. gunicorn in front of
Glance closes a connection idle for its keep-alive (2 s); a client whose
requests came about that far apart once got mitmproxy's 502 when the gateway
reused the upstream connection Glance was closing at that moment. Swept
across the keep-alive, no request fails: an image create (not idempotent)
because the gateway drops an upstream connection idle past
`upstream_keepalive_seconds`, and a GET even with that bound raised past
gunicorn's, because it is sent again on a fresh connection."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.stack import start_gateway, stop

INTERVALS = [1.950 + 0.005 * i for i in range(21)]  # 1.950 … 2.050 s
ROUNDS = 5  # requests per interval after the first: 105 in all


@pytest.mark.parametrize("method, keepalive", [("POST", 1), ("GET", 30)])
def test_keepalive_clients_swept_across_glances_keepalive_get_no_502(stack, tmp_path, method, keepalive):
    gw = start_gateway(tmp_path, stack, gateway_settings={"upstream_keepalive_seconds": keepalive})
    image_id = stack.create_image()
    created: list[str] = []

    def send(http: httpx.Client) -> int:
        if method == "GET":
            return http.get(f"/v2/images/{image_id}").status_code
        r = http.post("/v2/images", json={"name": "keepalive-sweep"})
        if r.status_code == 201:
            created.append(r.json()["id"])
        return r.status_code

    def client(interval: float) -> list[int]:
        with httpx.Client(base_url=gw.url, timeout=30, headers={"X-Auth-Token": stack.token("userA")}) as http:
            statuses = [send(http)]
            for _ in range(ROUNDS):
                time.sleep(interval)
                statuses.append(send(http))
            return statuses

    try:
        with ThreadPoolExecutor(len(INTERVALS)) as pool:
            statuses = Counter(s for result in pool.map(client, INTERVALS) for s in result)
        assert statuses == {200 if method == "GET" else 201: len(INTERVALS) * (ROUNDS + 1)}
        assert gw.metric("glance_gate_requests_total", code="502") == 0
        if method == "GET":  # the bound let stale connections through: the retry saved them
            assert "retrying GET on a fresh upstream connection" in gw.log_text()
    finally:
        stop(gw.proc)
        for created_id in created:
            stack.delete_image(created_id)
