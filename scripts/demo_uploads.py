"""The demo's scripted uploads: one line per case of the spec's status table,
each sent through glance-gate (config.toml, at the catalog's image endpoint)."""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid

import httpx

from policy.config import load
from tests.support.stack import REPO, Stack, connect, load_cloud, put_head, wait_port

LISTEN = load(REPO / "config.toml").gateway.listen
GATEWAY = f"http://{LISTEN.host}:{LISTEN.port}"
MiB = 1024 * 1024


def main() -> None:
    stack = Stack(load_cloud())
    wait_port(LISTEN.port)
    gw = httpx.Client(base_url=GATEWAY, timeout=60)
    a, b = stack.token("userA"), stack.token("userB")

    def put(image_id, token, body=b"demo image data", content_type="application/octet-stream"):
        headers = {"Content-Type": content_type, **({"X-Auth-Token": token} if token else {})}
        return gw.put(f"/v2/images/{image_id}/file", content=body, headers=headers)

    def show(expected, case, response_status, detail=""):
        mark = "ok  " if response_status == expected else "FAIL"
        print(f"{mark} {response_status:<6} {case}{'  ' + detail if detail else ''}")

    image = stack.create_image()
    r = put(image, a, os.urandom(8 * MiB))
    show(204, "userA uploads 8 MiB into its own queued image", r.status_code,
         f"-> Glance: {stack.image(image)['status']}, {stack.image(image)['size']} bytes")
    show(409, "userA uploads again into the now active image", put(image, a).status_code)
    show(400, "image id is not a UUID", put("not-a-uuid", a).status_code)
    show(400, "image has no disk_format/container_format", put(stack.create_image(formats=False), a).status_code)
    show(401, "no X-Auth-Token", put(stack.create_image(), None).status_code)
    show(401, "a forged token", put(stack.create_image(), "gAAAAAforged").status_code)

    shared = stack.create_image(visibility="shared")
    stack.http.post(f"{stack.glance}/v2/images/{shared}/members",
                    json={"member": stack.user("userB")["project_id"]}, headers={"X-Auth-Token": a})
    show(403, "userB (an image member, not the owner) uploads", put(shared, b).status_code)
    show(404, "userB uploads into projA's private image", put(stack.create_image(visibility="private"), b).status_code)
    show(404, "no such image", put(str(uuid.uuid4()), a).status_code)
    show(415, "Content-Type: text/plain", put(stack.create_image(), a, content_type="text/plain").status_code)
    show(500, "empty body", put(stack.create_image(), a, b"").status_code)

    # 20 GiB declared against config.toml's 10 GiB quota: refused before any body byte.
    with connect(GATEWAY) as sock:
        sock.sendall(put_head(stack.create_image(), a, 20 * 1024 * MiB, expect=True))
        status = int(sock.recv(65536).split(b" ", 2)[1])
    show(413, "20 GiB declared with Expect: 100-continue, quota 10 GiB (0 body bytes sent)", status)

    with tempfile.NamedTemporaryFile(suffix=".img") as f:
        f.write(os.urandom(4 * MiB))
        f.flush()
        env = {**os.environ, **stack.openrc("userA")}
        out = subprocess.run([stack.cloud["bin"]["openstack"], "image", "create", "--file", f.name,
                              "--disk-format", "raw", "--container-format", "bare",
                              "-f", "value", "-c", "status", "demo-cli"],
                             capture_output=True, text=True, env=env, timeout=120)
    show("active", "openstack image create --file, via the Keystone catalog", out.stdout.strip() or "error",
         out.stderr.strip()[-300:])


if __name__ == "__main__":
    main()
