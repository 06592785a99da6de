"""A thundering herd on a cold token, or on one project's usage: concurrent
first uses share one call. Keystone and Glance are made slow by delaying
relays, which also count the calls that reach them."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.support.relay import Relay
from tests.support.stack import start_gateway, stop

HERD = 16
DELAY = 0.5  # each answer of Keystone and Glance is held back this long


def test_a_herd_on_a_cold_token_and_one_projects_usage_shares_one_call_each(stack, tmp_path):
    keystone = Relay(int(stack.keystone.rsplit(":", 1)[1]), delay=DELAY)
    glance = Relay(int(stack.glance.rsplit(":", 1)[1]), delay=DELAY)
    keystone.on(), glance.on()
    project = stack.user("userA")["project_id"]
    gw = start_gateway(tmp_path, stack, keystone=keystone.url, upstream=glance.url,
                       quota={project: stack.usage(project) + HERD * 1024 * 1024})
    try:
        token = stack.new_token("userA")  # cold: never seen by this gateway
        images = [stack.create_image() for _ in range(HERD)]
        with ThreadPoolExecutor(HERD) as pool:
            answers = list(pool.map(lambda image_id: httpx.put(
                f"{gw.url}/v2/images/{image_id}/file", content=b"herd", timeout=60,
                headers={"X-Auth-Token": token, "Content-Type": "application/octet-stream"}), images))
        assert [r.status_code for r in answers] == [204] * HERD, [r.text for r in answers]
        validations = bytes(keystone.sent).count(f"X-Subject-Token: {token}".encode())
        # one listing: the visible images, then the hidden ones
        listings = len(re.findall(rb"GET /v2/images\?owner=" + project.encode() + rb"[^ ]*os_hidden=false",
                                  bytes(glance.sent)))
        assert (validations, listings) == (1, 1)
        assert gw.metric("glance_gate_token_validations_total", result="valid", cache="miss") == 1
        assert gw.metric("glance_gate_token_validations_total", result="valid", cache="shared") == HERD - 1
        for image_id in images:
            stack.delete_image(image_id)
    finally:
        stop(gw.proc)
        keystone.off(), glance.off()
