"""What the gateway asks Glance before it lets an upload through."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from typing import Protocol

import httpx

from policy import http
from policy.decision import Identity, Image
from policy.identity.keystone import PROBE_SECONDS, InvalidToken, Unavailable

# Statuses whose data no longer counts against the owner's quota.
NOT_STORED = frozenset({"deleted", "killed", "pending_delete"})


class Credentials(Protocol):
    """How the gateway's own calls tell Glance who is asking."""

    def caller(self, token: str, identity: Identity) -> dict[str, str]: ...

    async def service(self) -> dict[str, str]: ...


class TokenCredentials:
    """Glance runs authtoken: the caller's token, or the gateway's service token."""

    def __init__(self, service_token: Callable[[], Awaitable[str]]):
        self._service_token = service_token

    def caller(self, token: str, identity: Identity) -> dict[str, str]:
        return {"X-Auth-Token": token}

    async def service(self) -> dict[str, str]:
        return {"X-Auth-Token": await self._service_token()}


class GlanceClient:
    def __init__(self, url: str, credentials: Credentials, timeout: float,
                 tls: ssl.SSLContext | None = None, client: httpx.AsyncClient | None = None):
        self.url = url
        self.credentials = credentials
        self._http = client or http.client(timeout, tls)

    async def _get(self, path: str, auth: dict[str, str], params=None, **kw) -> httpx.Response:
        try:
            response = await self._http.get(self.url + path, params=params,
                                            headers={**auth, "Accept": "application/json"}, **kw)
        except http.ERRORS as e:
            raise Unavailable("glance", f"{type(e).__name__}: {e}") from None
        if response.status_code >= 500:
            raise Unavailable("glance", f"answered {response.status_code}")
        return response

    async def up(self) -> bool:
        """Glance answers, through the same client and TLS as the decisions."""
        try:
            await self._get("/versions", {}, timeout=PROBE_SECONDS)
        except Unavailable:
            return False
        return True

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

    async def stores(self) -> tuple[str, ...]:
        """The ids of every store Glance has enabled."""
        response = await self._get("/v2/info/stores", await self.credentials.service())
        if response.status_code != 200:
            raise Unavailable("glance", f"store list answered {response.status_code}")
        return tuple(store["id"] for store in response.json()["stores"])

    async def usage(self, project_id: str) -> int:
        """Bytes stored by the project's images, as Glance's image_size_total
        counts them (size × number of locations), read with the gateway's own
        identity. A copy an import is writing right now already counts."""
        total, path = 0, "/v2/images"
        params = {"owner": project_id, "visibility": "all", "limit": 1000}
        while path:
            response = await self._get(path, await self.credentials.service(), params)
            if response.status_code != 200:
                raise Unavailable("glance", f"image list answered {response.status_code}")
            body = response.json()
            total += sum(stored(image) for image in body["images"] if image["status"] not in NOT_STORED)
            path, params = body.get("next"), None  # `next` carries its own query
        return total


def _split(stores: str | None) -> tuple[str, ...]:
    return tuple(s for s in (stores or "").split(",") if s)


def stored(image: dict) -> int:
    """size × locations. Listings show `locations` only when Glance's
    show_multiple_locations is on; `stores` (multi-store Glance) names one
    store per location; a single-store Glance shows neither: one location
    once the data is in (`active`)."""
    if "locations" in image:
        copies = len(image["locations"])
    elif "stores" in image:
        copies = len(_split(image["stores"]))
    else:
        copies = 1 if image["status"] == "active" else 0
    copies += len(_split(image.get("os_glance_importing_to_stores")))
    return (image.get("size") or 0) * copies
