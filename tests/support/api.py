"""The image API as the end-to-end tests speak it: an upload, Glance's shape
of a refusal, and the links Glance builds."""

from __future__ import annotations

import httpx

from tests.support.stack import Stack

OCTET = {"Content-Type": "application/octet-stream"}


def put(client, image_id, token, body=b"x" * 1024, headers=None, route="file"):
    h = {**OCTET, **({"X-Auth-Token": token} if token is not None else {}), **(headers or {})}
    return client.put(f"/v2/images/{image_id}/{route}", content=body, headers=h)


def assert_refusal(response, status, reason_word):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == status
    assert body["title"]
    assert reason_word in body["message"].lower()
    assert response.headers["x-openstack-request-id"].startswith("req-")


def assert_links_name(client: httpx.Client, stack: Stack, base: str, headers: dict | None = None) -> None:
    """POST /v2/images's Location and the version documents' links start with base."""
    token = stack.token("userA")
    r = client.post("/v2/images", json={"name": "links", "disk_format": "raw", "container_format": "bare"},
                    headers={"X-Auth-Token": token, **(headers or {})})
    assert r.status_code == 201, r.text
    image_id = r.json()["id"]
    try:
        assert r.headers["location"] == f"{base}/v2/images/{image_id}"
    finally:
        stack.delete_image(image_id)
    for path, status in (("/versions", 200), ("/", 300)):
        r = client.get(path, headers=headers or {})
        assert r.status_code == status, r.text
        hrefs = [link["href"] for version in r.json()["versions"] for link in version["links"]]
        assert hrefs and all(href.startswith(f"{base}/v2") for href in hrefs), hrefs
