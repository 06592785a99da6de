"""Glance's quota model at the gateway, end to end (issue 19): refusals that
give their figures, dry-run, and limits read in the gateway's own region."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.api import assert_refusal, put
from tests.support.quota import (MiB, Slow, UploadRace, chunks, glance_usage, in_thread, ledger_usage, quota_gateway,
                                 system_token, wait_saving)
from tests.support.stack import Stack, all_running, at_once, wait_until

FIGURES = re.compile(r"used or reserved (\d+) \w+, limit (\d+), needed (\d+)\)")


def figures(response: httpx.Response) -> tuple[int, int, int]:
    """used, limit, needed, as the 413's message gives them."""
    found = FIGURES.search(response.json()["message"])
    assert found, response.text
    used, limit, needed = map(int, found.groups())
    return used, limit, needed


def test_a_refusal_gives_the_figures_of_the_ledger(stack, projQ, tmp_path, redis_server):
    """The 413 names the resource, the project's usage, its limit and what the
    upload needed; the usage is the ledger's (and Glance's), the audit line the same."""
    with quota_gateway(tmp_path, stack, projQ, 5 * MiB, redis_server) as gw:
        token = stack.token("userQ")
        client = httpx.Client(base_url=gw.url, timeout=60)
        assert put(client, stack.create_image(user="userQ"), token, os.urandom(3 * MiB)).status_code == 204
        stored = ledger_usage(redis_server, projQ)
        assert stored == glance_usage(stack, projQ) == 3 * MiB

        image_id = stack.create_image(user="userQ")
        declared = put(client, image_id, token, os.urandom(3 * MiB))
        assert_refusal(declared, 413, "image_size_total")
        assert f"{projQ} stores 3.0 MiB of 5.0 MiB; this upload needs 3.0 MiB" in declared.json()["message"]
        assert figures(declared) == (stored, 5 * MiB, 3 * MiB)
        stack.assert_untouched(image_id)

        # Chunked, of unknown size: cut where it would cross the limit.
        cut = put(client, image_id, token, chunks(3 * MiB))
        assert_refusal(cut, 413, "image_size_total")
        used, limit, needed = figures(cut)
        assert (used, limit) == (stored, 5 * MiB) and used + needed > limit >= needed
        stack.glance_took_up(image_id, 1)
        stack.assert_untouched(image_id, cut=True)
        wait_until(lambda: ledger_usage(redis_server, projQ) == stored, "the cut upload released")
        assert glance_usage(stack, projQ) == stored
    refused = [r["quota"] for r in gw.audit() if r["status"] == 413]
    assert refused == [{"resource": "image_size_total", "project": projQ, "used": u, "limit": lim, "needed": n}
                       for u, lim, n in (figures(declared), figures(cut))]


def test_dry_run_passes_every_would_be_refusal_and_counts_it_once(stack, projQ, tmp_path, redis_server):
    """The race of test_quota (24 uploads, 2.4x the quota, half chunked, over
    two gateways on one Redis) with quota.enforce = "dry-run": every upload
    passes; each one the quota would have refused is counted and audited once,
    and those it would have let through fit the quota, as with enforcement."""
    quota = UploadRace.QUOTA
    with all_running(quota_gateway(tmp_path, stack, projQ, quota, redis_server, enforce="dry-run")
                     for _ in range(2)) as gateways:
        race = UploadRace(stack, seed=4)
        sizes, images = race.sizes, race.images
        statuses = race.run(gateways)
        assert statuses == [204] * len(sizes)
        # Every upload is committed, the ones past the quota too: the ledger counts what Glance stores.
        wait_until(lambda: ledger_usage(redis_server, projQ) == sum(sizes), "every upload committed")
        counted = sum(gw.metric("glance_gate_quota_would_refuse_total", resource="image_size_total")
                      for gw in gateways)
    records = {r["image_id"]: r for gw in gateways for r in gw.audit()}
    assert len(records) == len(sizes) == sum(len(gw.audit()) for gw in gateways)
    would = [i for i, image_id in enumerate(images) if "would_refuse" in records[image_id]]
    print(f"\ndry-run: {len(would)} of {len(sizes)} uploads would have been refused, "
          f"{counted:.0f} counted; all passed")
    assert would and counted == len(would)
    assert all(records[images[i]]["would_refuse"]["resource"] == "image_size_total" for i in would)
    assert sum(size for i, size in enumerate(sizes) if i not in would) <= quota
    assert glance_usage(stack, projQ) == sum(sizes)


def test_token_and_state_are_enforced_in_dry_run(stack, projQ, tmp_path):
    with quota_gateway(tmp_path, stack, projQ, MiB, enforce="dry-run") as gw:
        client = httpx.Client(base_url=gw.url, timeout=60)
        image_id = stack.create_image(user="userQ")
        assert_refusal(put(client, image_id, "not-a-token", os.urandom(2 * MiB)), 401, "authentication")
        assert put(client, image_id, stack.token("userQ"), os.urandom(2 * MiB)).status_code == 204
        assert_refusal(put(client, image_id, stack.token("userQ"), b"x"), 409, "status")
    assert [r["status"] for r in gw.audit()] == [401, 204, 409]
    assert [("would_refuse" in r) for r in gw.audit()] == [False, True, False]


class KeystoneLimits:
    """Sets unified limits of the image service in Keystone for a test, and
    puts back what was there: registered defaults are shared by the cloud."""

    def __init__(self, stack: Stack):
        self.stack, self.undo = stack, []
        self.url, self.headers = f"{stack.keystone}/v3", {"X-Auth-Token": system_token(stack)}
        services = stack.http.get(f"{self.url}/services", params={"type": "image"}, headers=self.headers)
        self.service = services.json()["services"][0]["id"]

    def set(self, resource: str, value: int, region: str, project: str | None = None) -> None:
        kind, field = ("limits", "resource_limit") if project else ("registered_limits", "default_limit")
        query = {"service_id": self.service, "resource_name": resource, "region_id": region,
                 **({"project_id": project} if project else {})}
        found = self.stack.http.get(f"{self.url}/{kind}", params=query, headers=self.headers).json()[kind]
        mine = [x for x in found if x.get("region_id") == region]
        if mine:
            old = mine[0]
            r = self.stack.http.patch(f"{self.url}/{kind}/{old['id']}", headers=self.headers,
                                      json={kind[:-1]: {field: value}})
            self.undo.append(("PATCH", f"{kind}/{old['id']}", {kind[:-1]: {field: old[field]}}))
        else:
            r = self.stack.http.post(f"{self.url}/{kind}", headers=self.headers, json={kind: [{**query, field: value}]})
            self.undo.append(("DELETE", f"{kind}/{r.json()[kind][0]['id']}", None))
        assert r.status_code in (200, 201), r.text

    def restore(self) -> None:
        while self.undo:
            method, path, body = self.undo.pop()
            r = self.stack.http.request(method, f"{self.url}/{path}", headers=self.headers, json=body)
            assert r.status_code in (200, 204), r.text


@pytest.mark.parametrize("where", ["project", "registered"])
def test_keystone_limits_are_read_in_the_gateways_region(stack, projQ, tmp_path, where):
    """projQ's image_size_total is 2 MiB in RegionOne, the gateway's region, and
    100 MiB in RegionTLS: the larger one is present and ignored, whether it is
    the project's own limit or the registered default."""
    limits = KeystoneLimits(stack)
    try:
        for region, mib in (("RegionTLS", 100), ("RegionOne", 2)):
            if where == "project":
                limits.set("image_size_total", -1, region)  # a project limit needs a registered one
                limits.set("image_size_total", mib, region, project=projQ)
            else:
                limits.set("image_size_total", mib, region)
        with quota_gateway(tmp_path, stack, projQ, -1, keystone_limits=True, region="RegionOne") as gw:
            token = stack.token("userQ")
            client = httpx.Client(base_url=gw.url, timeout=60)
            image_id = stack.create_image(user="userQ")
            refused = put(client, image_id, token, os.urandom(3 * MiB))
            assert_refusal(refused, 413, "image_size_total")
            assert figures(refused) == (0, 2 * MiB, 3 * MiB)
            stack.assert_untouched(image_id)
            assert put(client, image_id, token, os.urandom(2 * MiB)).status_code == 204
    finally:
        limits.restore()


def glance_counts(stack: Stack, project: str, user: str = "userQ") -> dict[str, int]:
    """The project's usage of image_count_total (GET /v2/info/usage) and of
    image_stage_total (to the byte: Glance's own user_get_staging_usage), as
    Glance 33 counts them."""
    info = stack.info_usage(user)
    assert stack.user(user)["project_id"] == project
    return {"image_count_total": info["image_count_total"]["usage"],
            "image_stage_total": stack.glance_usage(project)[project][1]}


def create(gw, token: str, i: int = 0) -> httpx.Response:
    with httpx.Client(base_url=gw.url, timeout=60) as client:
        return client.post("/v2/images", headers={"X-Auth-Token": token},
                           json={"name": f"count-{i}", "disk_format": "raw", "container_format": "bare"})


def test_image_count_race_over_two_gateways_never_passes_the_limit(stack, projQ, tmp_path, redis_server):
    """12 creates at once over two gateways on one Redis, max_images = 4: 4
    created (every one while there was room), the rest 413 with the figures;
    Glance and the ledger count 4; a delete through the gateway frees a slot."""
    limit, token = 4, stack.token("userQ")
    entry = f"{projQ}/image_count_total"
    with all_running(quota_gateway(tmp_path, stack, projQ, -1, redis_server, max_images=limit)
                     for _ in range(2)) as gateways:
        responses = at_once(gateways, lambda gw, i: create(gw, token, i), range(12))
        statuses = [r.status_code for r in responses]
        print(f"\nimage_count_total race: {statuses.count(201)} created of limit {limit}, "
              f"{statuses.count(413)} refused")
        assert sorted(statuses) == [201] * limit + [413] * (12 - limit), statuses
        for r in responses:
            if r.status_code == 413:
                assert_refusal(r, 413, "image_count_total")
                used, lim, needed = figures(r)
                assert used + needed > lim == limit and needed == 1
        wait_until(lambda: ledger_usage(redis_server, entry) == limit, "the creates committed")
        assert glance_counts(stack, projQ)["image_count_total"] == limit

        gone = next(r.json()["id"] for r in responses if r.status_code == 201)
        with httpx.Client(base_url=gateways[1].url, timeout=60) as client:
            assert client.delete(f"/v2/images/{gone}", headers={"X-Auth-Token": token}).status_code == 204
        assert ledger_usage(redis_server, entry) == limit - 1
        assert create(gateways[0], token).status_code == 201
        assert_refusal(create(gateways[1], token), 413, "image_count_total")
        assert glance_counts(stack, projQ)["image_count_total"] == limit


def test_staged_bytes_count_until_the_import_that_consumes_them_ends(stack, projQ, tmp_path):
    """stage_bytes = 3 MiB: what is staged holds its bytes after the stage's
    204, until the glance-direct import of it ends, or its image is deleted."""
    with quota_gateway(tmp_path, stack, projQ, -1, stage_bytes=3 * MiB) as gw:
        token = stack.token("userQ")
        first, second, third = (stack.create_image(user="userQ") for _ in range(3))
        client = httpx.Client(base_url=gw.url, timeout=60)
        assert put(client, first, token, os.urandom(2 * MiB), route="stage").status_code == 204
        refused = put(client, second, token, os.urandom(2 * MiB), route="stage")
        assert_refusal(refused, 413, "image_stage_total")
        assert f"{projQ} stages 2.0 MiB of 3.0 MiB; this stage needs 2.0 MiB" in refused.json()["message"]
        stack.assert_untouched(second)
        assert put(client, second, token, os.urandom(MiB), route="stage").status_code == 204
        assert glance_counts(stack, projQ)["image_stage_total"] == 3 * MiB
        assert_refusal(put(client, third, token, b"x", route="stage"), 413, "image_stage_total")

        r = client.post(f"/v2/images/{first}/import", json={"method": {"name": "glance-direct"}},
                        headers={"X-Auth-Token": token})
        assert r.status_code == 202, r.text
        wait_until(lambda: stack.image(first)["status"] == "active", "the import done")
        # The import ended: its 2 MiB of staging are free again, once the gateway has seen it.
        wait_until(lambda: put(client, third, token, os.urandom(2 * MiB), route="stage").status_code == 204,
                   "the imported stage freed", timeout=10)
        assert glance_counts(stack, projQ)["image_stage_total"] == 3 * MiB

        assert client.delete(f"/v2/images/{second}", headers={"X-Auth-Token": token}).status_code == 204
        assert glance_counts(stack, projQ)["image_stage_total"] == 2 * MiB
        assert put(client, stack.create_image(user="userQ"), token, os.urandom(MiB), route="stage").status_code == 204


@pytest.mark.parametrize("ledger", ["redis", "memory"])
def test_no_refusal_while_there_is_room_for_chunked_uploads(stack, projQ, tmp_path, request, ledger):
    """Issue 19's race: 8 chunked uploads of 7 MiB, no size declared, at once,
    over two gateways on one Redis (or one gateway's memory ledger), into 40 MiB
    of room (1 MiB steps): at least 0.75 of the room is accepted (five fit: the
    ledger's schedule cuts only when every upload is blocked, the least
    advanced), never a byte over, the ledger equal to Glance, the refused untouched."""
    room, size = 40 * MiB, 7 * MiB
    server = request.getfixturevalue("redis_server") if ledger == "redis" else None
    token = stack.token("userQ")

    def upload(gw, i: int) -> int:
        with httpx.Client(base_url=gw.url, timeout=120) as client:
            return put(client, images[i], token, chunks(size)).status_code

    gateways = (quota_gateway(tmp_path, stack, projQ, room, server) for _ in range(2 if server else 1))
    with all_running(gateways) as gateways:
        images = [stack.create_image(user="userQ") for _ in range(8)]
        statuses = at_once(gateways, upload, range(8))
    accepted = statuses.count(204) * size
    print(f"\nchunked race ({ledger}): accepted {accepted // MiB} MiB of {room // MiB} MiB room = "
          f"{accepted / room:.3f}")
    assert set(statuses) <= {204, 413}, statuses
    assert 0.75 * room <= accepted <= room
    assert glance_usage(stack, projQ) == accepted
    for image_id, status in zip(images, statuses):
        if status == 413:
            stack.assert_untouched(image_id, cut=True)


def test_a_stalled_upload_holds_its_room_and_a_blocked_one_is_refused_after_wait_seconds(stack, projQ, tmp_path,
                                                                                          redis_server):
    """3 MiB of room, 1 MiB steps: an upload that stalls after 1.25 MiB holds
    its 2 MiB grant (no deadlock: it is not blocked); another, blocked at the
    end of the 1 MiB left, waits, and once nothing has moved for wait_seconds
    it is refused (413, its image back to queued with no data). The stalled
    one resumes and is stored."""
    token = stack.token("userQ")
    stalled, blocked = stack.create_image(user="userQ"), stack.create_image(user="userQ")
    body = Slow(MiB + MiB // 4, MiB)
    held = f"glance-gate:quota:{{{projQ}}}:held"
    granted = lambda: sorted(int(v.split(":")[0]) for v in redis_server.cli("HVALS", held).split())  # noqa: E731
    with quota_gateway(tmp_path, stack, projQ, 3 * MiB, redis_server, wait_seconds=1) as gw, \
            httpx.Client(base_url=gw.url, timeout=60) as client, httpx.Client(base_url=gw.url, timeout=60) as other:
        thread, first = in_thread(put, client, stalled, token, body)
        wait_until(lambda: granted() == [2 * MiB], "the first upload's second step")
        refused = put(other, blocked, token, chunks(2 * MiB))
        assert granted() == [2 * MiB]  # the stalled one's room was never taken from it
        body.go.set()
        thread.join(60)
    assert first["response"].status_code == 204
    assert_refusal(refused, 413, "image_size_total")
    stack.glance_took_up(blocked, 1)
    stack.assert_untouched(blocked, cut=True)
    assert glance_usage(stack, projQ) == 2 * MiB + MiB // 4


def near_limit_series(gw, project: str) -> list[str]:
    text = httpx.get(gw.metrics_url, timeout=10).text
    return [line for line in text.splitlines()
            if line.startswith("glance_gate_quota_near_limit{") and f'project="{project}"' in line]


def operate(gw, *argv: str) -> str:
    """`glance-gate usage|reconcile …` with the gateway's config: its output."""
    r = subprocess.run([str(Path(sys.executable).parent / "glance-gate"), *argv, "--config", str(gw.config)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_operators_can_ask_what_the_ledger_holds(stack, projQ, tmp_path, redis_server):
    """`glance-gate usage` prints the shared ledger's usage, reservations and
    limits; `glance-gate reconcile` re-lists a project now; the near-limit
    gauge shows projQ only while it is over quota.warn_ratio."""
    with quota_gateway(tmp_path, stack, projQ, 4 * MiB, redis_server, warn_ratio=0.5, max_images=10) as gw:
        token = stack.token("userQ")
        client = httpx.Client(base_url=gw.url, timeout=60)
        stored = stack.create_image(user="userQ")
        assert put(client, stored, token, os.urandom(3 * MiB)).status_code == 204
        assert create(gw, token).status_code == 201
        [series] = near_limit_series(gw, projQ)
        assert 'resource="image_size_total"' in series and float(series.split()[-1]) == 0.75

        rows = {line.split()[1]: line.split() for line in operate(gw, "usage", projQ).splitlines()[1:]}
        assert rows["image_size_total"][2] == str(3 * MiB) and rows["image_size_total"][-1] == str(4 * MiB)
        assert rows["image_count_total"][2] == "2" and rows["image_count_total"][-1] == "10"
        assert rows["image_count_uploading"][-1] == "unlimited"
        assert projQ in operate(gw, "usage")  # every project the ledger holds

        stack.delete_image(stored, user="userQ")  # behind the gateway's back
        out = operate(gw, "reconcile", projQ)
        assert f"{projQ} image_size_total: corrected by {-3 * MiB:+d}" in out
        assert f"{projQ} image_count_total: corrected by -1" in out
        assert ledger_usage(redis_server, projQ) == glance_usage(stack, projQ) == 0

        assert put(client, stack.create_image(user="userQ"), token, b"x" * 1000).status_code == 204
        assert near_limit_series(gw, projQ) == []


def refused_at(r: httpx.Response, resource: str, used: int, limit: int, needed: int) -> None:
    assert_refusal(r, 413, resource)
    assert figures(r) == (used, limit, needed)


@pytest.mark.parametrize("resource,small", [("image_stage_total", 1), ("image_count_total", 1),
                                            ("image_count_uploading", 1)])
def test_each_resource_is_read_from_keystone_in_the_gateways_region(stack, projQ, tmp_path, resource, small):
    """projQ's own limit of the resource is small in RegionOne and 100 in
    RegionTLS: the gateway (region RegionOne) refuses at the small one."""
    limits = KeystoneLimits(stack)
    token = stack.token("userQ")
    try:
        limits.set(resource, -1, "RegionTLS")  # a project limit needs a registered one
        limits.set(resource, 100, "RegionTLS", project=projQ)
        limits.set(resource, small, "RegionOne", project=projQ)
        with quota_gateway(tmp_path, stack, projQ, -1, keystone_limits=True, region="RegionOne") as gw:
            client = httpx.Client(base_url=gw.url, timeout=60)
            image_id = stack.create_image(user="userQ")
            if resource == "image_stage_total":
                refused_at(put(client, image_id, token, os.urandom(2 * MiB), route="stage"), resource, 0, MiB, 2 * MiB)
                stack.assert_untouched(image_id)
                assert put(client, image_id, token, os.urandom(MiB), route="stage").status_code == 204
            elif resource == "image_count_total":  # projQ owns image_id: its one image
                refused_at(create(gw, token), resource, 1, 1, 1)
                assert client.delete(f"/v2/images/{image_id}", headers={"X-Auth-Token": token}).status_code == 204
                assert create(gw, token).status_code == 201
            else:
                slow = Slow(MiB, MiB)
                thread, result = in_thread(put, httpx.Client(base_url=gw.url, timeout=60), image_id, token, slow)
                wait_saving(stack, image_id)
                other = stack.create_image(user="userQ")
                refused_at(put(client, other, token, b"x" * 1000), resource, 1, 1, 1)
                stack.assert_untouched(other)
                slow.go.set()
                thread.join(60)
                assert result["response"].status_code == 204
    finally:
        limits.restore()


def test_staging_race_over_two_gateways_never_passes_the_limit(stack, projQ, tmp_path, redis_server):
    """10 stages of 1 MiB at once over two gateways on one Redis, stage_bytes =
    4 MiB: 4 staged, the rest 413 untouched; Glance's own staging usage is 4 MiB."""
    token = stack.token("userQ")

    def stage(gw, i: int) -> int:
        with httpx.Client(base_url=gw.url, timeout=60) as client:
            return put(client, images[i], token, os.urandom(MiB), route="stage").status_code

    with all_running(quota_gateway(tmp_path, stack, projQ, -1, redis_server, stage_bytes=4 * MiB)
                     for _ in range(2)) as gateways:
        images = [stack.create_image(user="userQ") for _ in range(10)]
        statuses = at_once(gateways, stage, range(10))
    print(f"\nimage_stage_total race: {statuses.count(204)} MiB staged of limit 4 MiB")
    assert sorted(statuses) == [204] * 4 + [413] * 6, statuses
    assert glance_counts(stack, projQ)["image_stage_total"] == 4 * MiB
    wait_until(lambda: ledger_usage(redis_server, f"{projQ}/image_stage_total") == 4 * MiB, "the stages committed")
    for image_id, status in zip(images, statuses):
        if status == 413:
            stack.assert_untouched(image_id)


def test_uploads_cap_race_over_two_gateways(stack, projQ, tmp_path, redis_server):
    """6 uploads at once over two gateways on one Redis, max_uploads = 2, each
    body held open until all six are decided: 2 forwarded and stored, 4
    refused (413, image_count_uploading) and untouched."""
    def decided() -> list[dict]:
        return [r for gw in gateways for r in gw.audit()]

    with all_running(quota_gateway(tmp_path, stack, projQ, -1, redis_server, max_uploads=2)
                     for _ in range(2)) as gateways:
        token = stack.token("userQ")
        images = [stack.create_image(user="userQ") for _ in range(6)]
        bodies = [Slow(64 * 1024, 64 * 1024) for _ in images]
        runs = [in_thread(put, httpx.Client(base_url=gateways[i % 2].url, timeout=60), images[i], token, bodies[i])
                for i in range(6)]
        wait_until(lambda: len(decided()) == 4, "four refusals")  # a refusal is audited as it is made
        for body in bodies:
            body.go.set()
        for thread, _ in runs:
            thread.join(60)
        wait_until(lambda: len(decided()) == 6, "every upload audited")
    records = decided()
    print(f"\nimage_count_uploading race: {sum(r['status'] == 204 for r in records)} forwarded of cap 2")
    assert sorted(r["status"] for r in records) == [204] * 2 + [413] * 4
    assert all(r["quota"]["resource"] == "image_count_uploading" and r["quota"]["limit"] == 2
               for r in records if r["status"] == 413)
    assert sorted(stack.image(i)["status"] for i in images) == ["active"] * 2 + ["queued"] * 4
