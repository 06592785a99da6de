"""Which requests are uploads. The gateway classifies the path Glance's router
will see: decoded, dot segments and duplicate slashes resolved, and put through
Glance's version negotiation, which routes `/v2.1/images/…`, and `/images/…`
with `Accept: application/vnd.openstack.images-v2`, to the v2 API. A variant
spelling of an upload path is still an upload."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote

UPLOAD = "upload"
STAGE = "stage"
IMPORT = "import"
DOWNLOAD = "download"
CHANGE = "change"  # may change what the image stores: update, delete, a store's copy, a new location
CREATE = "create"  # POST /v2/images: one more image for the owner's image_count_total
OTHER = "other"

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_IMAGE_DATA = re.compile(r"^/images/([^/]*)/(file|stage|import)$", re.IGNORECASE)
# Glance's routes that change an image's locations, status or owner: what its
# image_size_total counts (size x locations of the owner's live images).
_CHANGES = ((re.compile(r"^/images/([^/]*)$", re.IGNORECASE), {"PATCH", "DELETE"}),
            (re.compile(r"^/stores/[^/]*/([^/]*)$", re.IGNORECASE), {"DELETE"}),
            (re.compile(r"^/images/([^/]*)/locations$", re.IGNORECASE), {"POST"}))
# A superset of the versions Glance 33 maps to v2 (v2, v2.0 … v2.18): policing a
# path Glance would then answer with 300 costs nothing.
_IMAGES = re.compile(r"^/images$", re.IGNORECASE)
_V2 = re.compile(r"v2(\.\d+)?", re.IGNORECASE)
_VND = "application/vnd.openstack.images-"


@dataclass(frozen=True)
class Route:
    kind: str
    image_id: str = ""

    @property
    def is_upload(self) -> bool:
        return self.kind in (UPLOAD, STAGE)

    @property
    def is_import(self) -> bool:
        return self.kind == IMPORT


def normalize(path: str) -> str:
    """The path as a WSGI router would see it: no query or params, decoded,
    duplicate slashes and dot segments resolved, no trailing slash."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    path = unquote(path).split(";", 1)[0]
    path = re.sub(r"/{2,}", "/", path)
    path = posixpath.normpath("/" + path.lstrip("/"))
    return path.rstrip("/") or "/"


def api_path(path: str, accept: str = "") -> str | None:
    """The path below the version, as Glance's version negotiation leaves it,
    or None where Glance answers with its version list instead."""
    path = normalize(path)
    if accept.startswith(_VND):  # media-type versioning: the path keeps its first segment
        return path if _V2.fullmatch(accept[len(_VND):]) else None
    version, _, rest = path.lstrip("/").partition("/")
    return "/" + rest if _V2.fullmatch(version) else None


def methods(method: str, path: str, content_type: str = "") -> set[str]:
    """Every method Glance's router may take the request for: `routes` lets a
    `_method` in the query override any request's method, and one in the body
    of a form POST (which the gateway cannot see before deciding)."""
    query = path.partition("?")[2].split("#", 1)[0]
    found = {method.upper()} | {v.upper() for k, v in parse_qsl(query, keep_blank_values=True)
                                 if k == "_method" and v}
    form = content_type.split(";", 1)[0].strip().lower()
    if method.upper() == "POST" and form in ("application/x-www-form-urlencoded", "multipart/form-data"):
        found.add("PUT")
    return found


def classify(method: str, path: str, accept: str = "", content_type: str = "") -> Route:
    api = api_path(path, accept) or ""
    match = _IMAGE_DATA.match(api)
    if not match:
        for pattern, changing in _CHANGES:
            if (change := pattern.match(api)) and methods(method, path, content_type) & changing:
                return Route(CHANGE, change.group(1))
        if _IMAGES.match(api) and "POST" in methods(method, path, content_type):
            return Route(CREATE)
        return Route(OTHER)
    image_id, action = match.group(1), match.group(2).lower()
    found = methods(method, path, content_type)
    if action == "import":
        return Route(IMPORT if "POST" in found else OTHER, image_id)
    if "PUT" in found:
        return Route(UPLOAD if action == "file" else STAGE, image_id)
    if found & {"GET", "HEAD"} and action == "file":
        return Route(DOWNLOAD, image_id)
    # Glance answers 405 to any other method on these paths.
    return Route(OTHER, image_id)


def is_uuid(value: str) -> bool:
    """Only the canonical 8-4-4-4-12 form: Glance stores ids that way and
    looks them up verbatim."""
    return _UUID.fullmatch(value) is not None
