"""The hard quota end to end: real Keystone, real Glance, real redis-server,
gateway processes and real HTTP clients. projQ belongs to these tests: each
starts with no image, so its usage at Glance is exactly what the test stored."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from tests.support.api import assert_refusal, put
from tests.support.quota import (LEASE, MiB, Slow, UploadRace, assert_usage, chunks, glance_usage, in_thread,
                                 ledger_usage, quota_gateway, system_token, wait_saving)
from tests.support.redis_server import RedisServer
from tests.support.stack import Gateway, Stack, all_running, at_once, wait_until


@pytest.mark.parametrize("ledger,workers", [("memory", 1), ("redis", 1), ("redis", 2)])
def test_race_concurrent_uploads_never_pass_the_quota(stack, projQ, tmp_path, request, ledger, workers):
    """24 uploads at once, 2.4× the quota in all, half of them chunked; with
    Redis, spread over two gateways sharing it, each of `workers` processes."""
    quota = UploadRace.QUOTA
    server = request.getfixturevalue("redis_server") if ledger == "redis" else None
    with all_running(quota_gateway(tmp_path, stack, projQ, quota, server, gateway_settings={"workers": workers})
                     for _ in range(2 if server else 1)) as gateways:
        race = UploadRace(stack, seed=4)
        statuses = race.run(gateways)
    sizes, images = race.sizes, race.images
    accepted = sum(size for size, status in zip(sizes, statuses) if status == 204)
    print(f"\n{ledger} x {workers} workers: accepted {accepted} of quota {quota} bytes = {accepted / quota:.3f}; "
          f"{statuses.count(204)} accepted, {statuses.count(413)} refused, {sum(sizes)} offered")
    assert set(statuses) == {204, 413}, statuses
    assert accepted <= quota
    assert_usage(stack, projQ, accepted, server)
    for i, status in enumerate(statuses):
        if status == 413:
            stack.assert_untouched(images[i], cut=bool(i % 2))


def test_chunked_upload_grows_its_reservation_then_is_cut_at_the_limit(stack, projQ, tmp_path, redis_server):
    """1 MiB reservation steps: a 3 MiB chunked upload takes three, a 6 MiB one
    is cut where it would cross the 5 MiB quota, and a retry that fits succeeds."""
    with quota_gateway(tmp_path, stack, projQ, 5 * MiB, redis_server) as gw:
        token = stack.token("userQ")
        client = httpx.Client(base_url=gw.url, timeout=60)
        first = stack.create_image(user="userQ")
        assert put(client, first, token, chunks(3 * MiB)).status_code == 204
        image_id = stack.create_image(user="userQ")
        assert_refusal(put(client, image_id, token, chunks(6 * MiB)), 413, "quota")
        stack.glance_took_up(image_id, 1)
        stack.assert_untouched(image_id, cut=True)
        assert put(client, image_id, token, chunks(2 * MiB)).status_code == 204
        assert_usage(stack, projQ, 5 * MiB, redis_server)
        cut = stack.create_image(user="userQ")
        assert_refusal(put(client, cut, token, chunks(MiB)), 413, "quota")
        stack.assert_untouched(cut, cut=True)
        assert_usage(stack, projQ, 5 * MiB, redis_server)


def test_declared_image_size_of_a_chunked_upload_is_reserved_whole(stack, projQ, tmp_path, redis_server):
    with quota_gateway(tmp_path, stack, projQ, 2 * MiB, redis_server) as gw:
        token = stack.token("userQ")
        client = httpx.Client(base_url=gw.url, timeout=60)
        image_id = stack.create_image(user="userQ")
        r = put(client, image_id, token, chunks(MiB), headers={"x-openstack-image-size": str(3 * MiB)})
        assert_refusal(r, 413, "quota")
        stack.assert_untouched(image_id)
        # Declared 1 MiB, sends 2: cut where it passes what it declared.
        r = put(client, image_id, token, chunks(2 * MiB), headers={"x-openstack-image-size": str(MiB)})
        assert_refusal(r, 413, "quota")
        stack.glance_took_up(image_id, 1)
        stack.assert_untouched(image_id, cut=True)
        assert_usage(stack, projQ, 0, redis_server)


def test_admin_upload_is_charged_to_the_image_owner(stack, projQ, tmp_path, redis_server):
    with quota_gateway(tmp_path, stack, projQ, MiB, redis_server) as gw:
        client = httpx.Client(base_url=gw.url, timeout=60)
        image_id = stack.create_image(user="userQ")
        assert_refusal(put(client, image_id, stack.token("admin"), os.urandom(2 * MiB)), 413, "quota")
        stack.assert_untouched(image_id)
        assert put(client, image_id, stack.token("admin"), os.urandom(MiB)).status_code == 204
        assert_usage(stack, projQ, MiB, redis_server)


def test_concurrent_uploads_cap(stack, projQ, tmp_path):
    with quota_gateway(tmp_path, stack, projQ, -1, max_uploads=1) as gw:
        token = stack.token("userQ")
        client = httpx.Client(base_url=gw.url, timeout=60)
        busy, other = stack.create_image(user="userQ"), stack.create_image(user="userQ")
        slow = Slow(MiB, MiB)
        thread, result = in_thread(put, httpx.Client(base_url=gw.url, timeout=60), busy, token, slow)
        wait_saving(stack, busy)
        assert_refusal(put(client, other, token, b"x" * 1000), 413, "uploads in progress")
        stack.assert_untouched(other)
        slow.go.set()
        thread.join(60)
        assert result["response"].status_code == 204
        assert put(client, other, token, b"x" * 1000).status_code == 204


def test_stage_then_import_cannot_bypass_the_quota(stack, projQ, tmp_path, redis_server):
    """Staging is checked like /file; the glance-direct import that stores the
    staged data is checked again, against what is stored by then."""
    with quota_gateway(tmp_path, stack, projQ, 3 * MiB, redis_server) as gw:
        token = stack.token("userQ")
        client = httpx.Client(base_url=gw.url, timeout=60)
        staged = stack.create_image(user="userQ")
        assert_refusal(put(client, staged, token, os.urandom(4 * MiB), route="stage"), 413, "quota")
        stack.assert_untouched(staged)
        assert put(client, staged, token, os.urandom(2 * MiB), route="stage").status_code == 204
        assert put(client, stack.create_image(user="userQ"), token, os.urandom(2 * MiB)).status_code == 204
        r = client.post(f"/v2/images/{staged}/import", json={"method": {"name": "glance-direct"}},
                        headers={"X-Auth-Token": token})
        assert_refusal(r, 413, "quota")
        assert stack.image(staged)["status"] == "uploading"
        assert_usage(stack, projQ, 2 * MiB, redis_server)
        assert stack.glance_usage(projQ)[projQ][1] == 2 * MiB  # staged, as Glance's image_stage_total counts


def test_import_within_the_quota_passes(stack, projQ, tmp_path, redis_server):
    with quota_gateway(tmp_path, stack, projQ, 3 * MiB, redis_server) as gw:
        token = stack.token("userQ")
        client = httpx.Client(base_url=gw.url, timeout=60)
        staged = stack.create_image(user="userQ")
        assert put(client, staged, token, os.urandom(2 * MiB), route="stage").status_code == 204
        r = client.post(f"/v2/images/{staged}/import", json={"method": {"name": "glance-direct"}},
                        headers={"X-Auth-Token": token})
        assert r.status_code == 202, r.text
        wait_until(lambda: stack.image(staged)["status"] == "active", "the import")
        assert_usage(stack, projQ, 2 * MiB, redis_server)
        # The import's bytes count now: a 2 MiB upload no longer fits.
        assert_refusal(put(client, stack.create_image(user="userQ"), token, os.urandom(2 * MiB)), 413, "quota")


def test_import_body_must_be_small_and_declared(stack, gw_http):
    """The gateway reads an import's JSON before deciding, so it bounds it:
    refused before any of it is read or reaches Glance, the staged image kept."""
    staged = stack.create_image()
    token = stack.token("userA")
    assert put(gw_http, staged, token, b"staged", route="stage").status_code == 204
    url, headers = f"/v2/images/{staged}/import", {"X-Auth-Token": token, "Content-Type": "application/json"}
    chunked = iter([b'{"method": {"name": "glance-direct"}}'])
    assert_refusal(gw_http.post(url, content=chunked, headers=headers), 400, "content-length")
    padded = b'{"method": {"name": "glance-direct"}, "pad": "' + b"x" * 70_000 + b'"}'
    assert_refusal(gw_http.post(url, content=padded, headers=headers), 400, "content-length")
    assert stack.image(staged)["status"] == "uploading"


def test_copy_image_into_another_store_is_charged_for_the_copy(stack, projQ, tmp_path, redis_server):
    """An admin copies projQ's 2 MiB image into the cloud's second store: 4 MiB
    in all, refused under a 3 MiB quota, accepted under 5 MiB, and then
    Glance counts both copies."""
    image_id = stack.create_image(user="userQ")
    with all_running(quota_gateway(tmp_path, stack, projQ, limit, redis_server)
                     for limit in (3 * MiB, 5 * MiB)) as (tight, roomy):
        copy = {"method": {"name": "copy-image"}, "stores": ["fs2"]}
        admin = {"X-Auth-Token": stack.token("admin")}
        assert put(httpx.Client(base_url=tight.url), image_id, stack.token("userQ"),
                   os.urandom(2 * MiB)).status_code == 204
        r = httpx.post(f"{tight.url}/v2/images/{image_id}/import", json=copy, headers=admin, timeout=30)
        assert_refusal(r, 413, "quota")
        assert stack.image(image_id)["stores"] == "fs"
        r = httpx.post(f"{roomy.url}/v2/images/{image_id}/import", json=copy, headers=admin, timeout=30)
        assert r.status_code == 202, r.text
        wait_until(lambda: stack.image(image_id)["stores"] == "fs,fs2", "the copy into fs2")
        assert_usage(stack, projQ, 4 * MiB, redis_server)


@pytest.mark.parametrize("rule, status", [("refuse", 413), ("allow", 400)])
def test_web_download_follows_the_configured_rule(stack, projQ, tmp_path, rule, status):
    """Its size is unknown: refused by default; `allow` leaves it to Glance
    (whose cloud-in-a-box does not enable web-download: 400)."""
    with quota_gateway(tmp_path, stack, projQ, 3 * MiB, remote_import=rule) as gw:
        image_id = stack.create_image(user="userQ")
        r = httpx.post(f"{gw.url}/v2/images/{image_id}/import", timeout=30,
                       json={"method": {"name": "web-download", "uri": "http://127.0.0.1:1/image"}},
                       headers={"X-Auth-Token": stack.token("userQ")})
        assert r.status_code == status, r.text
        if rule == "refuse":
            assert_refusal(r, 413, "unknown size")
        stack.assert_untouched(image_id)
        metrics = httpx.get(gw.metrics_url).text
        reason = "quota" if rule == "refuse" else "bad_request"
        assert f'glance_gate_imports_total{{method="web-download",reason="{reason}"}} 1.0' in metrics


def test_import_needs_a_token_and_the_owner(stack, projQ, tmp_path):
    with quota_gateway(tmp_path, stack, projQ, 3 * MiB) as gw:
        client = httpx.Client(base_url=gw.url, timeout=30)
        image_id = stack.create_image(user="userQ")
        body = {"method": {"name": "glance-direct"}}
        assert_refusal(client.post(f"/v2/images/{image_id}/import", json=body), 401, "authentication")
        r = client.post(f"/v2/images/{image_id}/import", json=body, headers={"X-Auth-Token": stack.token("userB")})
        assert_refusal(r, 404, "no image")
        stack.assert_untouched(image_id)


def test_redis_down_fails_closed_by_default(stack, projQ, tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    with all_running(quota_gateway(tmp_path, stack, projQ, 3 * MiB, server, **down)
                     for down in ({}, {"ledger_down": "allow"})) as (closed, open_):
        server.stop()
        token = stack.token("userQ")
        image_id = stack.create_image(user="userQ")
        assert_refusal(put(httpx.Client(base_url=closed.url), image_id, token), 503, "redis")
        stack.assert_untouched(image_id)
        assert put(httpx.Client(base_url=open_.url), image_id, token).status_code == 204
        wait_until(lambda: 'glance_gate_dependency_up{dependency="redis"} 0.0' in httpx.get(closed.metrics_url).text,
                   "the gateway's probe to report Redis down", 15)


def test_kill_9_mid_upload_the_reservation_expires_with_its_lease(stack, projQ, tmp_path, redis_server):
    """One gateway is killed while it streams a 2 MiB upload out of a 3 MiB
    quota: its reservation outlives it only until the lease runs out, and
    Glance puts the image back to `queued`."""
    with all_running(quota_gateway(tmp_path, stack, projQ, 3 * MiB, redis_server)
                     for _ in range(2)) as (doomed, survivor):
        token = stack.token("userQ")
        image_id, other = stack.create_image(user="userQ"), stack.create_image(user="userQ")
        slow = Slow(MiB, MiB)
        thread, _ = in_thread(put, httpx.Client(base_url=doomed.url, timeout=60), image_id, token, slow,
                              {"x-openstack-image-size": str(2 * MiB)})
        wait_saving(stack, image_id)
        client = httpx.Client(base_url=survivor.url, timeout=60)
        assert_refusal(put(client, other, token, os.urandom(2 * MiB)), 413, "quota")
        doomed.proc.send_signal(signal.SIGKILL)
        doomed.proc.wait(10)
        killed_at = time.monotonic()
        data = os.urandom(2 * MiB)
        # Nobody released it: the dead gateway's reservation still counts ...
        assert_refusal(put(client, other, token, data), 413, "quota")
        # ... until its lease runs out.
        while (r := put(client, other, token, data)).status_code == 413 and time.monotonic() - killed_at < LEASE + 5:
            time.sleep(0.2)
        print(f"\nreservation of the killed gateway gone {time.monotonic() - killed_at:.1f} s after kill -9 "
              f"(lease {LEASE} s)")
        assert r.status_code == 204, r.text
        slow.go.set()
        thread.join(60)
        stack.glance_took_up(image_id, 1)
        stack.assert_untouched(image_id, cut=True)
        assert_usage(stack, projQ, 2 * MiB, redis_server)


def test_keystone_unified_limits_win_over_config(stack, projQ, tmp_path, redis_server):
    """image_size_total, in MiB, as Glance reads it: projQ's own limit (2 MiB)
    applies although config.toml says unlimited."""
    headers = {"X-Auth-Token": system_token(stack)}
    keystone = f"{stack.keystone}/v3"
    service = stack.http.get(f"{keystone}/services", params={"type": "image"}, headers=headers).json()
    service_id = service["services"][0]["id"]
    # In the cloud's region, beside the registered limit there (scripts/cloud.d/seed.py)
    query = {"service_id": service_id, "resource_name": "image_size_total", "region_id": stack.cloud["region"]}
    r = stack.http.post(f"{keystone}/limits", headers=headers,
                        json={"limits": [{**query, "project_id": projQ, "resource_limit": 2}]})
    assert r.status_code == 201, r.text
    limit_id = r.json()["limits"][0]["id"]
    try:
        with quota_gateway(tmp_path, stack, projQ, -1, redis_server, keystone_limits=True,
                           region=stack.cloud["region"]) as gw:
            token = stack.token("userQ")
            client = httpx.Client(base_url=gw.url, timeout=60)
            image_id = stack.create_image(user="userQ")
            assert_refusal(put(client, image_id, token, os.urandom(3 * MiB)), 413, str(2 * MiB))
            stack.assert_untouched(image_id)
            assert put(client, image_id, token, os.urandom(2 * MiB)).status_code == 204
            assert_usage(stack, projQ, 2 * MiB, redis_server)
    finally:
        assert stack.http.delete(f"{keystone}/limits/{limit_id}", headers=headers).status_code == 204


def listings(stack: Stack, project: str) -> int:
    """How many listings of the project's images Glance has answered so far
    (each lists the visible images, then the hidden ones)."""
    with open(stack.cloud["logs"]["glance"], errors="replace") as f:
        return sum(f"GET /v2/images?owner={project}" in line and "os_hidden=false" in line for line in f)


def reconciliations(gw) -> float:
    return gw.metric("glance_gate_quota_reconcile_duration_seconds_count")


def test_a_cold_project_costs_one_listing_shared_by_concurrent_uploads(stack, projQ, tmp_path, redis_server):
    """Eight first uploads at once into a project the gateway has not seen:
    Glance lists its images once, and never again for the uploads after."""
    token = stack.token("userQ")

    def upload(gw: Gateway, i: int) -> int:
        with httpx.Client(base_url=gw.url, timeout=60) as client:
            return put(client, images[i], token, os.urandom(1000)).status_code

    with quota_gateway(tmp_path, stack, projQ, 100 * MiB, redis_server) as gw:
        images = [stack.create_image(user="userQ") for _ in range(10)]
        before = listings(stack, projQ)
        assert at_once([gw], upload, range(8)) == [204] * 8
        assert [upload(gw, i) for i in range(8, 10)] == [204] * 2
    assert listings(stack, projQ) - before == 1
    assert_usage(stack, projQ, 10 * 1000, redis_server)


@pytest.mark.parametrize("ledger", ["memory", "redis"])
def test_a_delete_through_the_gateway_frees_its_bytes_for_the_very_next_upload(stack, projQ, tmp_path,
                                                                               request, ledger):
    server = request.getfixturevalue("redis_server") if ledger == "redis" else None
    with quota_gateway(tmp_path, stack, projQ, 3 * MiB, server) as gw:
        token = stack.token("userQ")
        client = httpx.Client(base_url=gw.url, timeout=60)
        stored, waiting = stack.create_image(user="userQ"), stack.create_image(user="userQ")
        data = os.urandom(2 * MiB)
        assert put(client, stored, token, data).status_code == 204
        assert_refusal(put(client, waiting, token, data), 413, "quota")
        assert client.delete(f"/v2/images/{stored}", headers={"X-Auth-Token": token}).status_code == 204
        assert put(client, waiting, token, data).status_code == 204
        assert_usage(stack, projQ, 2 * MiB, server)
        assert reconciliations(gw) == 0  # the delete did it, not a reconciliation


def test_a_copy_deleted_from_a_store_through_the_gateway_frees_its_bytes(stack, projQ, tmp_path, redis_server):
    """A 2 MiB image copied into the second store counts twice; deleting that
    copy (DELETE /v2/stores/fs2/{id}) through the gateway frees one."""
    with quota_gateway(tmp_path, stack, projQ, 5 * MiB, redis_server) as gw:
        token, admin = stack.token("userQ"), {"X-Auth-Token": stack.token("admin")}
        client = httpx.Client(base_url=gw.url, timeout=60)
        image_id, waiting = stack.create_image(user="userQ"), stack.create_image(user="userQ")
        assert put(client, image_id, token, os.urandom(2 * MiB)).status_code == 204
        r = client.post(f"/v2/images/{image_id}/import", headers=admin,
                        json={"method": {"name": "copy-image"}, "stores": ["fs2"]})
        assert r.status_code == 202, r.text
        wait_until(lambda: stack.image(image_id)["stores"] == "fs,fs2", "the copy into fs2")
        assert_usage(stack, projQ, 4 * MiB, redis_server)
        data = os.urandom(2 * MiB)
        assert_refusal(put(client, waiting, token, data), 413, "quota")
        assert client.delete(f"/v2/stores/fs2/{image_id}", headers=admin).status_code == 204
        assert_usage(stack, projQ, 2 * MiB, redis_server)
        assert put(client, waiting, token, data).status_code == 204
        assert_usage(stack, projQ, 4 * MiB, redis_server)


def test_a_new_owner_takes_the_bytes_along(stack, projQ, tmp_path, redis_server):
    """An admin gives projQ's image to projB through the gateway: projQ's bytes are free at once."""
    try:
        with quota_gateway(tmp_path, stack, projQ, 3 * MiB, redis_server) as gw:
            token = stack.token("userQ")
            client = httpx.Client(base_url=gw.url, timeout=60)
            given, waiting = stack.create_image(user="userQ"), stack.create_image(user="userQ")
            data = os.urandom(2 * MiB)
            assert put(client, given, token, data).status_code == 204
            assert_refusal(put(client, waiting, token, data), 413, "quota")
            r = client.patch(f"/v2/images/{given}", json=[{"op": "replace", "path": "/owner",
                                                          "value": stack.user("userB")["project_id"]}],
                             headers={"X-Auth-Token": stack.token("admin"),
                                      "Content-Type": "application/openstack-images-v2.1-json-patch"})
            assert r.status_code == 200, r.text
            assert put(client, waiting, token, data).status_code == 204
            assert_usage(stack, projQ, 2 * MiB, redis_server)
    finally:
        stack.delete_image(given, user="admin")


def test_a_delete_made_directly_at_glance_frees_its_bytes_after_one_reconciliation(stack, projQ, tmp_path,
                                                                                   redis_server):
    """Behind the gateway's back the ledger is off by the delete's bytes
    (README's bound), until the next reconciliation."""
    period = 4  # seconds between reconciliations: the steps below take a fraction of it
    with quota_gateway(tmp_path, stack, projQ, 3 * MiB, redis_server, reconcile_seconds=period) as gw:
        token = stack.token("userQ")
        client = httpx.Client(base_url=gw.url, timeout=60)
        stored, waiting = stack.create_image(user="userQ"), stack.create_image(user="userQ")
        data = os.urandom(2 * MiB)
        assert put(client, stored, token, data).status_code == 204
        done = wait_until(lambda: reconciliations(gw) or None, "a first reconciliation", 3 * period)
        stack.delete_image(stored, user="userQ")  # behind the gateway's back
        assert_refusal(put(client, waiting, token, data), 413, "quota")  # it does not know yet
        assert ledger_usage(redis_server, projQ) == glance_usage(stack, projQ) + 2 * MiB
        wait_until(lambda: reconciliations(gw) > done, "the next reconciliation", 3 * period)
        assert_usage(stack, projQ, 0, redis_server)
        assert put(client, waiting, token, data).status_code == 204
        assert_usage(stack, projQ, 2 * MiB, redis_server)
        assert gw.metric("glance_gate_quota_drift_bytes_sum") == 2 * MiB


def test_reconciliation_while_uploads_race_lets_nothing_over_the_quota(stack, projQ, tmp_path, redis_server):
    """Two gateways on Redis reconcile projQ every 100 ms while 24 uploads race,
    2.4× the quota in all: the listings land between reservations and commits.
    (Each listing is two requests, visible and hidden images: a shorter period
    keeps Glance's one worker too busy to answer the uploads' image lookups.)"""
    quota = UploadRace.QUOTA
    with all_running(quota_gateway(tmp_path, stack, projQ, quota, redis_server, reconcile_seconds=0.1)
                     for _ in range(2)) as gateways:
        race = UploadRace(stack, seed=7)
        sizes, images = race.sizes, race.images
        # Seeded once, so the reconciliations run throughout the race.
        assert put(httpx.Client(base_url=gateways[0].url, timeout=60), images[0], race.token, b"x").status_code == 204
        quota -= 1
        before = sum(map(reconciliations, gateways))
        statuses = race.run(gateways, first=1)
        during = sum(map(reconciliations, gateways)) - before
        accepted = sum(size for size, status in zip(sizes[1:], statuses) if status == 204)
        for i, status in enumerate(statuses, 1):
            if status == 413:
                stack.assert_untouched(images[i], cut=bool(i % 2))
        # A reconciliation during the race may count a fresh upload twice (README);
        # the ones after it, with every upload settled, count what Glance counts.
        after = sum(map(reconciliations, gateways))
        wait_until(lambda: sum(map(reconciliations, gateways)) >= after + 4, "reconciliations after the race")
        assert_usage(stack, projQ, accepted + 1, redis_server)
    print(f"\n{during:.0f} reconciliations during the race; accepted {accepted} of {quota} bytes")
    assert during >= 2
    assert set(statuses) == {204, 413}, statuses
    assert accepted <= quota
