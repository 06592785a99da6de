"""The two ways to run the same addon (what a bad config says: tests/unit/test_main.py)."""

from __future__ import annotations

import httpx

from tests.support.stack import start_gateway

OCTET = {"Content-Type": "application/octet-stream"}


def test_mitmdump_runs_the_same_addon(stack, tmp_path):
    with start_gateway(tmp_path, stack, mitmdump=True) as gw:
        with httpx.Client(base_url=gw.url, timeout=30) as client:
            image_id = stack.create_image()
            r = client.put(f"/v2/images/{image_id}/file", content=b"x",
                           headers={**OCTET, "X-Auth-Token": "forged"})
            assert r.status_code == 401
            stack.assert_untouched(image_id)
            r = client.put(f"/v2/images/{image_id}/file", content=b"via mitmdump",
                           headers={**OCTET, "X-Auth-Token": stack.token("userA")})
            assert r.status_code == 204, r.text
            assert stack.image(image_id)["size"] == len(b"via mitmdump")
