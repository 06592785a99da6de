"""Every row of the spec's status table, end to end: a real HTTP client, the
gateway, real Keystone and real Glance. After each refusal, Glance's image is
checked to be untouched. One case of each refusal, over plain HTTP and HTTPS,
is in test_answers.py; these are the rest: the variants of a rule, and what
Glance answers to an allowed upload."""

from __future__ import annotations

import hashlib
import os
import uuid

import httpx
import pytest

from tests.support.api import OCTET, assert_refusal, put
from tests.support.stack import QUOTA_B, free_port, start_gateway

MiB = 1024 * 1024


def test_204_upload_streams_to_glance(stack, gw_http):
    image_id = stack.create_image()
    data = os.urandom(3 * MiB + 17)
    r = put(gw_http, image_id, stack.token("userA"), data)
    assert r.status_code == 204, r.text
    image = stack.image(image_id)
    assert image["status"] == "active"
    assert image["size"] == len(data)
    assert image["checksum"] == hashlib.md5(data).hexdigest()


def test_204_chunked_upload(stack, gw_http):
    image_id = stack.create_image()
    parts = [os.urandom(100_000) for _ in range(5)]
    r = put(gw_http, image_id, stack.token("userA"), iter(parts))
    assert r.status_code == 204, r.text
    assert stack.image(image_id)["size"] == 500_000


def test_204_media_type_is_case_insensitive_with_parameters(stack, gw_http):
    image_id = stack.create_image()
    r = put(gw_http, image_id, stack.token("userA"),
            headers={"Content-Type": "Application/Octet-Stream; charset=binary"})
    assert r.status_code == 204, r.text


@pytest.mark.parametrize("image_id", ["not-a-uuid", "1234", "0cb9328d-dd8c-41bb-b378-404b854b93bz"])
def test_400_image_id_not_a_uuid(stack, gw_http, image_id):
    assert_refusal(put(gw_http, image_id, stack.token("userA")), 400, "uuid")


@pytest.mark.parametrize("token", [None, "", "garbage-token", "gAAAAAB" + "x" * 180])
def test_401_missing_or_invalid_token(stack, gw_http, token):
    image_id = stack.create_image()
    r = put(gw_http, image_id, token)
    assert_refusal(r, 401, "authentication")
    assert r.headers["www-authenticate"] == f'Keystone uri="{stack.keystone}"'
    stack.assert_untouched(image_id)


def test_401_two_token_headers(stack, gw_http):
    image_id = stack.create_image()
    token = stack.token("userA")
    r = gw_http.put(f"/v2/images/{image_id}/file", content=b"x",
                    headers=[("X-Auth-Token", token), ("X-Auth-Token", token), *OCTET.items()])
    assert_refusal(r, 401, "more than one")
    stack.assert_untouched(image_id)


def test_401_revoked_token_after_cache(stack, gw_http):
    """A token Keystone no longer knows is refused (not cached before)."""
    token = stack.new_token("userA")
    image_id = stack.create_image()
    r = stack.http.delete(f"{stack.keystone}/v3/auth/tokens",
                          headers={"X-Auth-Token": token, "X-Subject-Token": token})
    assert r.status_code == 204
    assert_refusal(put(gw_http, image_id, token), 401, "authentication")
    stack.assert_untouched(image_id)


def test_admin_may_upload_into_another_projects_image(stack, gw_http):
    image_id = stack.create_image()
    assert put(gw_http, image_id, stack.token("admin")).status_code == 204
    assert stack.image(image_id)["status"] == "active"


def test_404_deleted_image(stack, gw_http):
    image_id = stack.create_image()
    stack.delete_image(image_id)
    assert_refusal(put(gw_http, image_id, stack.token("userA")), 404, "no image")


def test_410_image_deleted_during_upload_passes_through(stack, gw_http):
    image_id = stack.create_image()
    r = put(gw_http, image_id, stack.token("userA"), stack.body_deleting_image_midway(image_id))
    assert r.status_code == 410, r.text


def test_413_chunked_upload_cut_when_it_crosses_the_quota(stack, gw_http):
    image_id = stack.create_image(user="userB")
    chunks = (os.urandom(256 * 1024) for _ in range(QUOTA_B // (256 * 1024) + 4))
    r = put(gw_http, image_id, stack.token("userB"), chunks)
    assert_refusal(r, 413, "quota")
    # Glance learns of the dropped connection asynchronously.
    stack.glance_took_up(image_id, 1)
    stack.assert_untouched(image_id, cut=True)
    # ... and a retry that fits succeeds.
    assert put(gw_http, image_id, stack.token("userB"), iter([b"y" * MiB])).status_code == 204
    assert stack.image(image_id)["size"] == MiB
    stack.delete_image(image_id, user="userB")


def test_415_content_type(stack, gw_http):
    image_id = stack.create_image()
    token = stack.token("userA")
    for content_type in ("text/plain", "application/json", "application/octet-streamx"):
        r = put(gw_http, image_id, token, headers={"Content-Type": content_type})
        assert_refusal(r, 415, "content-type")
    r = gw_http.put(f"/v2/images/{image_id}/file", content=b"x", headers={"X-Auth-Token": token})
    assert_refusal(r, 415, "content-type")
    stack.assert_untouched(image_id)


def test_500_empty_chunked_body_never_completes_at_glance(stack, gw_http):
    token = stack.token("userA")
    images = [stack.create_image() for _ in range(10)]
    for image_id in images:  # repeated: a cut must never race into a complete body
        assert_refusal(put(gw_http, image_id, token, iter([])), 500, "empty")
        stack.assert_untouched(image_id, cut=True)


def test_503_glance_unreachable(stack, tmp_path):
    with start_gateway(tmp_path, stack, upstream=f"http://127.0.0.1:{free_port()}") as gw:
        r = put(httpx.Client(base_url=gw.url), str(uuid.uuid4()), stack.token("userA"))
        assert_refusal(r, 503, "glance")


def test_stage_gets_the_same_policy(stack, gw_http):
    image_id = stack.create_image()
    r = put(gw_http, image_id, "garbage", route="stage")
    assert_refusal(r, 401, "authentication")
    assert_refusal(put(gw_http, image_id, stack.token("userB"), route="stage"), 404, "no image")
    assert_refusal(put(gw_http, image_id, stack.token("userA"), b"", route="stage"), 500, "empty")
    stack.assert_untouched(image_id)
    r = put(gw_http, image_id, stack.token("userA"), b"staged data", route="stage")
    assert r.status_code == 204, r.text
    assert stack.image(image_id)["status"] == "uploading"
