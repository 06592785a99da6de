"""What the gateway asks Glance before it lets an upload through."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Protocol

import httpx

from policy import http
from policy.decision import BYTES_STAGED, BYTES_STORED, IMAGES, Identity, Image
from policy.exceptions import InvalidToken, Misconfigured, Unavailable

if TYPE_CHECKING:
    from policy.identity.keystone import KeystoneClient

# Statuses whose data no longer counts against the owner's quota.
NOT_STORED = frozenset({"deleted", "killed", "pending_delete"})
# Statuses whose data sits in Glance's staging area (glance-direct staged, or importing).
STAGING = frozenset({"uploading", "importing"})


class Credentials(Protocol):
    """How the gateway's own calls tell Glance who is asking."""

    fix: str  # what to change when Glance refuses the service identity

    def caller(self, token: str, identity: Identity) -> dict[str, str]: ...

    async def service(self) -> dict[str, str]: ...


class TokenCredentials:
    """Glance runs authtoken: the caller's token, or the gateway's service token."""

    def __init__(self, keystone: KeystoneClient, admin_roles: frozenset[str]):
        self.keystone, self.admin_roles = keystone, admin_roles

    fix = "give the service user Glance's admin role (admin by default), and check [keystone] project"

    def caller(self, token: str, identity: Identity) -> dict[str, str]:
        return {"X-Auth-Token": token}

    async def service(self) -> dict[str, str]:
        token = await self.keystone.service_token()
        if not self.keystone.service_roles & self.admin_roles:
            # Glance would answer 200 with only the images this user may see:
            # usage would be undercounted, the quota open.
            raise Misconfigured("glance", f"the service user {self.keystone.conf.username!r} has none of "
                                f"policy.admin_roles, so Glance lists it only the images it may see",
                                "give it Glance's admin role (admin by default)")
        return {"X-Auth-Token": token}


class GlanceClient:
    def __init__(self, url: str, credentials: Credentials, timeout: float,
                 tls: ssl.SSLContext | None = None, client: httpx.AsyncClient | None = None):
        self.url = url
        self.credentials = credentials
        self._http = client or http.client(timeout, tls)

    async def _get(self, path: str, auth: dict[str, str], params=None) -> httpx.Response:
        return await http.call(self._http, "glance", "GET", self.url + path, params=params,
                               headers={**auth, "Accept": "application/json"})

    async def _service_get(self, what: str, path: str, params=None) -> dict:
        """A call with the gateway's own identity, which must succeed."""
        response = await self._get(path, await self.credentials.service(), params)
        if response.status_code != 200:
            raise http.refused("glance", what, response, self.credentials.fix, "gateway.upstream")
        return response.json()

    async def image(self, image_id: str, token: str, caller: Identity) -> Image | None:
        """The image as the caller sees it, so Glance's visibility rules apply;
        None when the caller cannot see it."""
        response = await self._get(f"/v2/images/{image_id}", self.credentials.caller(token, caller))
        if response.status_code == 401:
            raise InvalidToken("Glance refused the token")
        if response.status_code in (403, 404):
            return None
        if response.status_code != 200:
            raise Unavailable("glance", f"image lookup answered {response.status_code}")
        body = response.json()
        return Image(id=body["id"], owner=body.get("owner"), status=body["status"],
                     disk_format=body.get("disk_format"), container_format=body.get("container_format"),
                     size=body.get("size"), stores=_split(body.get("stores")))

    async def footprint(self, image_id: str) -> tuple[str, dict[str, int]] | None:
        """The image's owner and what it counts for in each of Glance's quota
        resources, read with the gateway's own identity; None when there is no such image."""
        image = await self.service_image(image_id)
        return None if image is None else _owned(image)

    async def service_image(self, image_id: str) -> dict | None:
        """The image as Glance shows it to the gateway's own identity; None when there is no such image."""
        response = await self._get(f"/v2/images/{image_id}", await self.credentials.service())
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise http.refused("glance", "the image lookup", response, self.credentials.fix, "gateway.upstream")
        return response.json()

    async def stores(self) -> tuple[tuple[str, ...], str | None]:
        """The ids of the stores Glance imports into with `all_stores` (every
        enabled one but the read-only http store), and its default store's."""
        stores = (await self._service_get("the store list", "/v2/info/stores"))["stores"]
        return (tuple(s["id"] for s in stores if s.get("read-only") != "true"),
                next((s["id"] for s in stores if s.get("default")), None))

    async def probe(self) -> None:
        """What a quota decision needs: the listing of a project's images with
        the gateway's own identity (any owner: the permission is the same)."""
        await self._service_get("the image list", "/v2/images",
                                {"owner": "glance-gate-probe", "visibility": "all", "limit": 1})

    async def usage(self, project_id: str, resource: str = BYTES_STORED) -> int:
        """The project's usage of a resource as Glance counts it, read with the
        gateway's own identity: image_size_total the bytes stored (size × number
        of locations; a copy an import is writing right now already counts),
        image_stage_total the bytes staged, image_count_total the images.
        Glance counts hidden images too, which its list leaves out unless asked
        for them alone: two listings."""
        total = 0
        for hidden in ("false", "true"):
            path, params = "/v2/images", {"owner": project_id, "visibility": "all", "os_hidden": hidden,
                                          "limit": 1000}
            while path:
                body = await self._service_get("the image list", path, params)
                total += sum(_owned(image)[1][resource] for image in body["images"])
                path, params = body.get("next"), None  # `next` carries its own query
        return total


def _split(stores: str | None) -> tuple[str, ...]:
    return tuple(s for s in (stores or "").split(",") if s)


def _owned(image: dict) -> tuple[str, dict[str, int]]:
    return image.get("owner") or "", counts(image)


def counts(image: dict) -> dict[str, int]:
    """What the image counts for in each resource, as Glance 33 counts them
    (glance/db/sqlalchemy/api.py: _image_get_disk_usage_by_owner,
    _image_get_staging_usage_by_owner, _image_get_count_by_owner)."""
    status, size = image["status"], image.get("size") or 0
    live = status not in NOT_STORED
    copying = bool(_split(image.get("os_glance_importing_to_stores")))
    return {BYTES_STORED: stored(image) if live else 0,
            BYTES_STAGED: size if status in STAGING or (live and copying) else 0,
            IMAGES: int(live)}


def stored(image: dict) -> int:
    """size × locations. Listings show `locations` only when Glance's
    show_multiple_locations is on; `stores` (multi-store Glance) names one
    store per location; a single-store Glance shows neither: one location
    once the data is in (`active`, and `deactivated`, which only an active
    image becomes)."""
    if "locations" in image:
        copies = len(image["locations"])
    elif "stores" in image:
        copies = len(_split(image["stores"]))
    else:
        copies = 1 if image["status"] in ("active", "deactivated") else 0
    copies += len(_split(image.get("os_glance_importing_to_stores")))
    return (image.get("size") or 0) * copies
