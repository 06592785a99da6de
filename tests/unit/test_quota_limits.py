"""Each project's limits (policy/quota/limits.py): config.toml's, or
Keystone's unified limits of the image service as Glance reads them (the
project's own, else the registered default, in the gateway's region only;
sizes in MiB), over httpx's mock transport."""

from __future__ import annotations

import asyncio

import httpx

from policy.config import UNLIMITED, Quota
from policy.decision import BYTES_STAGED, BYTES_STORED, IMAGES, UPLOADS
from policy.quota.limits import MiB, Limits


def test_config_limits_per_project_and_resource():
    q = Quota(default_bytes=100, projects={"big": 1000}, stage_bytes=50, max_images=3, max_uploads=UNLIMITED)
    limits = Limits(q)

    async def go():
        return [await limits.limit_for(p, r) for p, r in
                (("p", BYTES_STORED), ("big", BYTES_STORED), ("p", BYTES_STAGED), ("p", IMAGES), ("p", UPLOADS))]
    assert asyncio.run(go()) == [100, 1000, 50, 3, UNLIMITED]


class UnifiedLimits:
    """Keystone's limits API: `project` and `registered` are (resource, region, value) rows."""

    def __init__(self, project=(), registered=()):
        self.project, self.registered, self.calls = project, registered, 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        assert request.headers["X-Auth-Token"] == "service-token"
        path, params = request.url.path, request.url.params
        if path == "/v3/services":
            return httpx.Response(200, json={"services": [{"id": "glance-svc"}]})
        rows = self.project if path == "/v3/limits" else self.registered
        value = "resource_limit" if path == "/v3/limits" else "default_limit"
        key = path.rsplit("/", 1)[1]
        return httpx.Response(200, json={key: [{"region_id": region, value: v} for resource, region, v in rows
                                              if resource == params["resource_name"]]})


def keystone_limits(api: UnifiedLimits, region: str = "") -> Limits:
    async def token() -> str:
        return "service-token"
    q = Quota(default_bytes=7, keystone_limits=True, region=region)
    return Limits(q, "http://keystone", token, httpx.AsyncClient(transport=httpx.MockTransport(api)))


def test_keystone_limits_the_projects_own_then_the_default_then_config_toml():
    api = UnifiedLimits(project=[(BYTES_STORED, None, 5)], registered=[(BYTES_STORED, None, 9), (IMAGES, None, 4)])
    limits = keystone_limits(api)

    async def go():
        return [await limits.limit_for("p", r) for r in (BYTES_STORED, IMAGES, BYTES_STAGED, BYTES_STORED)]
    stored, images, staged, again = asyncio.run(go())
    assert (stored, images) == (5 * MiB, 4)  # sizes in MiB, counts as they are
    assert staged == 7  # nothing registered: config.toml's (stage_bytes unset: the byte limit)
    assert again == stored and api.calls == 1 + 2 + 1 + 2  # the service once; cached after


def test_only_the_gateways_region_counts_and_minus_one_is_unlimited():
    api = UnifiedLimits(project=[(BYTES_STORED, "other", 10**6), (BYTES_STORED, "here", UNLIMITED)])
    assert asyncio.run(keystone_limits(api, region="here").limit_for("p")) == UNLIMITED
    api = UnifiedLimits(project=[(BYTES_STORED, "other", 10**6)], registered=[(BYTES_STORED, None, 2)])
    assert asyncio.run(keystone_limits(api).limit_for("p")) == 2 * MiB  # another region's is ignored
