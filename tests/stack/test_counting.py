"""Counting what Glance counts, end to end (issue 17, findings 4-7): each case
is an upload past projQ's quota dressed as one way the gateway could count less
than Glance's image_size_total: hidden images, deactivated images, import
bodies read differently, location adds. The image's state is checked at Glance
afterwards, and the ledger (Redis) against Glance's own count, to the byte."""

from __future__ import annotations

import gzip
import json
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.support.api import assert_refusal, put
from tests.support.glance_server import Glance
from tests.support.quota import MiB, assert_usage, ledger_usage, quota_gateway
from tests.support.stack import Stack, wait_until

PART = 6 * MiB // 10  # three of them are 1.8 MiB, under a 1 MiB quota only one fits


def seeded_elsewhere(stack: Stack, tmp_path, project: str, image_id: str, upstream: str | None = None) -> None:
    """One upload through a gateway of its own, so that the gateway under test
    learns of it by its first listing of the project, as after any restart."""
    with quota_gateway(tmp_path, stack, project, MiB, upstream=upstream) as gw:
        assert put(httpx.Client(base_url=gw.url, timeout=60), image_id, stack.token("userQ"),
                   os.urandom(PART)).status_code == 204


def test_hidden_images_count(stack, projQ, tmp_path, redis_server):
    """Finding 4: Glance counts hidden images; its list shows them only when asked."""
    hidden = [stack.create_image(user="userQ", os_hidden=True) for _ in range(2)]
    seeded_elsewhere(stack, tmp_path, projQ, hidden[0])
    with quota_gateway(tmp_path, stack, projQ, MiB, redis_server) as gw:
        r = put(httpx.Client(base_url=gw.url, timeout=60), hidden[1], stack.token("userQ"), os.urandom(PART))
        assert_refusal(r, 413, "quota")
        stack.assert_untouched(hidden[1])
        assert_usage(stack, projQ, PART, redis_server)
        # Glance's own GET /v2/info/usage agrees, in the whole MiB it reports
        assert stack.info_usage("userQ")["image_size_total"]["usage"] == PART // MiB


@pytest.fixture(params=["multi-store", "single-store"])
def glance_url(request, stack, tmp_path):
    """The cloud's Glance (several stores: an image lists its `stores`), or a
    single-store Glance of our own on the same database, whose images list
    neither `stores` nor `locations`: the gateway counts them by their state."""
    if request.param == "multi-store":
        yield stack.glance
        return
    conf = (Path(stack.cloud["glance_config_dir"]) / "glance-api.conf").read_text()
    conf = re.sub(r"^enabled_backends = .*$", "", conf, flags=re.M)
    conf = conf.replace("[glance_store]\ndefault_backend = fs\n",
                        f"[glance_store]\nstores = file\ndefault_store = file\n"
                        f"filesystem_store_datadir = {tmp_path / 'images'}\n")
    (tmp_path / "glance-api.conf").write_text(conf)
    with Glance(stack, tmp_path / "glance.log", config_dir=str(tmp_path)) as glance:
        yield glance.url


def test_deactivated_images_count(stack, projQ, tmp_path, redis_server, glance_url):
    """Finding 5: deactivate, let the gateway list the project, upload again, reactivate."""
    stored, other = stack.create_image(user="userQ"), stack.create_image(user="userQ")
    seeded_elsewhere(stack, tmp_path, projQ, stored, upstream=glance_url)
    admin = {"X-Auth-Token": stack.token("admin")}
    actions = f"{stack.glance}/v2/images/{stored}/actions"
    assert stack.http.post(f"{actions}/deactivate", headers=admin).status_code == 204
    try:
        with quota_gateway(tmp_path, stack, projQ, MiB, redis_server, upstream=glance_url) as gw:
            r = put(httpx.Client(base_url=gw.url, timeout=60), other, stack.token("userQ"), os.urandom(PART))
            assert_refusal(r, 413, "quota")
            stack.assert_untouched(other)
            assert_usage(stack, projQ, PART, redis_server)
    finally:
        assert stack.http.post(f"{actions}/reactivate", headers=admin).status_code == 204


def staged(stack: Stack, gw) -> str:
    """A projQ image with PART bytes staged through the gateway."""
    image_id = stack.create_image(user="userQ")
    r = put(httpx.Client(base_url=gw.url, timeout=60), image_id, stack.token("userQ"), os.urandom(PART),
            route="stage")
    assert r.status_code == 204, r.text
    return image_id


def imports(stack: Stack, image_id: str) -> int:
    """How many import requests of the image reached Glance."""
    with open(stack.cloud["logs"]["glance"], errors="replace") as f:
        return sum(f'"POST /v2/images/{image_id}/import' in line for line in f)


@pytest.mark.parametrize("stores", [{"fs": {}, "fs2": {}}, ["fs", "fs2"]], ids=["json-object", "list"])
def test_an_import_into_several_stores_is_reserved_for_each(stack, projQ, tmp_path, redis_server, stores):
    """Finding 6: Glance imports into each key of a JSON object `stores`: two
    copies of the staged PART, past a 1 MiB quota."""
    with quota_gateway(tmp_path, stack, projQ, MiB, redis_server) as gw:
        image_id = staged(stack, gw)
        r = httpx.post(f"{gw.url}/v2/images/{image_id}/import", timeout=30, headers={"X-Auth-Token": stack.token("userQ")},
                       json={"method": {"name": "glance-direct"}, "stores": stores})
        assert_refusal(r, 413, "quota")
        assert imports(stack, image_id) == 0
        image = stack.image(image_id)
        assert (image["status"], image.get("stores")) == ("uploading", None), image
        assert_usage(stack, projQ, 0, redis_server)


def test_copy_into_the_store_named_by_the_header(stack, projQ, tmp_path, redis_server):
    """Finding 6: copy-image's target store named by X-Image-Meta-Store: a second
    copy, past a 1 MiB quota."""
    with quota_gateway(tmp_path, stack, projQ, MiB, redis_server) as gw:
        image_id = stack.create_image(user="userQ")
        assert put(httpx.Client(base_url=gw.url, timeout=60), image_id, stack.token("userQ"),
                   os.urandom(PART)).status_code == 204
        r = httpx.post(f"{gw.url}/v2/images/{image_id}/import", timeout=30, json={"method": {"name": "copy-image"}},
                       headers={"X-Auth-Token": stack.token("admin"), "X-Image-Meta-Store": "fs2"})
        assert_refusal(r, 413, "quota")
        assert imports(stack, image_id) == 0
        assert stack.image(image_id)["stores"] == "fs"
        assert_usage(stack, projQ, PART, redis_server)


@pytest.mark.parametrize("method", ["glance-direct", "web-download"])
def test_an_encoded_import_body_never_reaches_glance(stack, projQ, tmp_path, redis_server, method):
    """Finding 6: Glance reads an import's raw bytes, never decoding a
    Content-Encoding: the gateway refuses what it would read otherwise, before
    Glance sees it (web-download: whatever remote_import says)."""
    with quota_gateway(tmp_path, stack, projQ, MiB, redis_server) as gw:
        image_id = staged(stack, gw)
        doc = {"method": {"name": method, "uri": "http://127.0.0.1:1/x"}}  # one store: PART fits
        r = httpx.post(f"{gw.url}/v2/images/{image_id}/import", timeout=30,
                       content=gzip.compress(json.dumps(doc).encode()),
                       headers={"X-Auth-Token": stack.token("userQ"), "Content-Type": "application/json",
                                "Content-Encoding": "gzip"})
        assert_refusal(r, 400, "content-encoding")
        assert imports(stack, image_id) == 0
        assert stack.image(image_id)["status"] == "uploading"
        # Only the stage was decided on: its bytes are staged (image_stage_total), none stored.
        assert_usage(stack, projQ, 0)
        assert ledger_usage(redis_server, projQ) is None
        assert ledger_usage(redis_server, f"{projQ}/image_stage_total") == stack.glance_usage(projQ)[projQ][1] > 0


@pytest.fixture
def served():
    """An HTTP server on loopback serving `size` bytes at any path: where a location's data lives."""
    data = {"body": b""}

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(data["body"])))
            self.end_headers()

        def do_GET(self):
            self.do_HEAD()
            self.wfile.write(data["body"])

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def serve(size: int) -> str:
        data["body"] = os.urandom(size)
        return f"http://127.0.0.1:{server.server_port}/image"
    yield serve
    server.shutdown()


def add_location(stack: Stack, gw, image_id: str, url: str) -> httpx.Response:
    """As the owner's user, into the cloud's read-only http store."""
    return httpx.post(f"{gw.url}/v2/images/{image_id}/locations", json={"url": url}, timeout=30,
                      headers={"X-Auth-Token": stack.token("userQ")})


def test_a_location_add_is_refused_under_a_byte_limit(stack, projQ, tmp_path, served):
    """Finding 7: a 2 MiB location added to projQ's image under a 1 MiB quota."""
    with quota_gateway(tmp_path, stack, projQ, MiB) as gw:
        image_id = stack.create_image(user="userQ")
        assert_refusal(add_location(stack, gw, image_id, served(2 * MiB)), 413, "location")
        stack.assert_untouched(image_id)
        assert_usage(stack, projQ, 0)  # the decision needed no usage: the ledger holds none to compare


def test_an_allowed_location_add_is_counted_once_glance_has_added_it(stack, projQ, tmp_path, redis_server,
                                                                     served):
    """Finding 7: Glance adds the location in a task after its 202; the gateway
    follows it, and then the ledger holds what Glance counts."""
    with quota_gateway(tmp_path, stack, projQ, 3 * MiB, redis_server, location_add="allow") as gw:
        client = httpx.Client(base_url=gw.url, timeout=60)
        stored = stack.create_image(user="userQ")
        assert put(client, stored, stack.token("userQ"), os.urandom(PART)).status_code == 204
        image_id = stack.create_image(user="userQ")
        r = add_location(stack, gw, image_id, served(2 * MiB))
        assert r.status_code == 202, r.text
        wait_until(lambda: stack.image(image_id)["status"] == "active", "Glance's task to add the location")
        assert_usage(stack, projQ, PART + 2 * MiB, redis_server)
        # Counted: what is left of the quota is less than another PART.
        other = stack.create_image(user="userQ")
        assert_refusal(put(client, other, stack.token("userQ"), os.urandom(PART)), 413, "quota")
        stack.assert_untouched(other)
