"""Stale upstream connections never cost a request. gunicorn in front of
Glance closes a connection idle for its keep-alive (2 s); a client whose
requests come about that far apart once got mitmproxy's 502 when the gateway
reused the upstream connection Glance was closing at that moment. Swept
across the keep-alive, no request fails."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.stack import start_gateway, stop

INTERVALS = [1.950 + 0.005 * i for i in range(21)]  # 1.950 … 2.050 s
ROUNDS = 5  # requests per interval after the first: 105 in all


def test_keepalive_clients_swept_across_glances_keepalive_get_no_502(stack, tmp_path):
    gw = start_gateway(tmp_path, stack)
    image_id = stack.create_image()
    token = stack.token("userA")

    def client(interval: float) -> list[int]:
        with httpx.Client(base_url=gw.url, timeout=30, headers={"X-Auth-Token": token}) as http:
            statuses = [http.get(f"/v2/images/{image_id}").status_code]
            for _ in range(ROUNDS):
                time.sleep(interval)
                statuses.append(http.get(f"/v2/images/{image_id}").status_code)
            return statuses

    try:
        with ThreadPoolExecutor(len(INTERVALS)) as pool:
            statuses = Counter(s for result in pool.map(client, INTERVALS) for s in result)
        assert statuses == {200: len(INTERVALS) * (ROUNDS + 1)}
        assert gw.metric("glance_gate_requests_total", code="502") == 0
    finally:
        stop(gw.proc)
