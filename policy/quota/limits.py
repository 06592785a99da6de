"""Each project's limits: from config.toml, or from Keystone's unified limits
of the image service, as Glance reads them (oslo.limit): the project's limit,
else the registered default, in the gateway's region (`quota.region`, the
region of Glance's own [oslo_limit] endpoint); a limit of another region is
never taken. Sizes are in MiB there. -1 means unlimited in both."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
from cachetools import TTLCache

from policy import http
from policy.config import UNLIMITED, Quota
from policy.decision import BYTES_STAGED, BYTES_STORED
from policy.exceptions import Unavailable

MiB = 1024 * 1024
IN_MIB = frozenset({BYTES_STORED, BYTES_STAGED})  # the other resources are counts


class Limits:
    def __init__(self, quota: Quota, keystone_url: str | None = None,
                 service_token: Callable[[], Awaitable[str]] | None = None,
                 client: httpx.AsyncClient | None = None):
        self.quota = quota
        self._keystone, self._service_token = keystone_url, service_token
        self._http = client
        self._cache: TTLCache = TTLCache(maxsize=10_000, ttl=quota.limits_cache_seconds)
        self._service_id: str | None = None

    async def limit_for(self, project: str, resource: str = BYTES_STORED) -> int:
        """The project's limit of the resource (bytes or a count), UNLIMITED (-1) for none."""
        if not self._keystone:
            return self.quota.limit_for(project, resource)
        if (project, resource) not in self._cache:
            self._cache[project, resource] = await self._unified_limit(project, resource)
        return self._cache[project, resource]

    async def _unified_limit(self, project: str, resource: str) -> int:
        service = await self._image_service()
        query = {"service_id": service, "resource_name": resource}
        for path, params in (("/v3/limits", {**query, "project_id": project}), ("/v3/registered_limits", query)):
            key = path.rsplit("/", 1)[1]
            # Keystone cannot filter on "no region": every region's come, this one's is taken.
            found = [x for x in (await self._get(path, params))[key] if (x.get("region_id") or "") == self.quota.region]
            if found:
                value = found[0]["resource_limit" if key == "limits" else "default_limit"]
                return value * MiB if resource in IN_MIB and value != UNLIMITED else value
        # Nothing registered in Keystone: config.toml's limit applies.
        return self.quota.limit_for(project, resource)

    async def _image_service(self) -> str:
        if self._service_id is None:
            services = (await self._get("/v3/services", {"type": "image"}))["services"]
            if not services:
                raise Unavailable("keystone", "no image service in the catalog to read limits for")
            self._service_id = services[0]["id"]
        return self._service_id

    async def _get(self, path: str, params: dict) -> dict:
        assert self._http and self._service_token
        response = await http.call(self._http, "keystone", "GET", self._keystone + path, params=params,
                                   headers={"X-Auth-Token": await self._service_token()})
        if response.status_code != 200:
            raise http.refused("keystone", path, response,
                               "give the service user a role that may read limits (reader on the system, "
                               "or admin)", "keystone.url")
        return response.json()
