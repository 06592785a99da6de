"""Everything that is not an upload passes through untouched, streamed."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess


MiB = 1024 * 1024


def test_api_calls_pass_through_unchanged(stack, gw_http):
    token = stack.token("userA")
    image_id = stack.create_image()
    direct = stack.http.get(f"{stack.glance}/v2/images/{image_id}", headers={"X-Auth-Token": token})
    via = gw_http.get(f"/v2/images/{image_id}", headers={"X-Auth-Token": token})
    assert via.status_code == direct.status_code == 200
    assert via.json() == direct.json()
    # Glance's own refusals of non-upload calls reach the client as Glance sent them.
    r = gw_http.get("/v2/images", headers={"X-Auth-Token": "bad"})
    assert r.status_code == 401


def test_download_streams_the_stored_data(stack, gw_http):
    image_id = stack.create_image()
    data = os.urandom(32 * MiB)
    token = stack.token("userA")
    r = stack.http.put(f"{stack.glance}/v2/images/{image_id}/file", content=data,
                       headers={"X-Auth-Token": token, "Content-Type": "application/octet-stream"})
    assert r.status_code == 204
    digest, received = hashlib.sha256(), 0
    with gw_http.stream("GET", f"/v2/images/{image_id}/file", headers={"X-Auth-Token": token}) as r:
        assert r.status_code == 200
        assert r.headers["content-md5"] == hashlib.md5(data).hexdigest()
        for chunk in r.iter_raw():
            digest.update(chunk)
            received += len(chunk)
    assert received == len(data)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


def test_openstack_cli_uploads_through_the_catalog(stack, gateway, openstack_cli, tmp_path):
    """`openstack image create --file` finds the image endpoint in the Keystone
    catalog; the cloud-in-a-box registers the gateway there."""
    image = tmp_path / "cli.img"
    image.write_bytes(os.urandom(2 * MiB))
    env = {**os.environ, **stack.openrc("userA")}
    out = subprocess.run(
        [openstack_cli, "image", "create", "--file", str(image), "--disk-format", "raw",
         "--container-format", "bare", "-f", "json", "cli-upload"],
        capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    image_id = json.loads(out.stdout)["id"]
    assert stack.image(image_id)["status"] == "active"
    assert stack.image(image_id)["size"] == 2 * MiB
    # The audit trail says who uploaded it.
    uploads = [r for r in gateway.audit() if r["image_id"] == image_id]
    assert [(r["status"], r["user_id"], r["bytes_transferred"]) for r in uploads] == [
        (204, stack.user("userA")["user_id"], 2 * MiB)]
