"""Which requests are uploads. Glance's router sees a decoded, dot-resolved path,
so the gateway classifies the same form: a variant spelling of an upload path is
still an upload."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from urllib.parse import unquote

UPLOAD = "upload"
STAGE = "stage"
IMPORT = "import"
DOWNLOAD = "download"
OTHER = "other"

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_IMAGE_DATA = re.compile(r"^/v2/images/([^/]*)/(file|stage|import)$", re.IGNORECASE)


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
    path = unquote(path)
    path = ";".join(path.split(";")[:1]) if ";" in path else path
    path = re.sub(r"/{2,}", "/", path)
    path = posixpath.normpath("/" + path.lstrip("/"))
    return path.rstrip("/") or "/"


def classify(method: str, path: str) -> Route:
    match = _IMAGE_DATA.match(normalize(path))
    if not match:
        return Route(OTHER)
    image_id, action = match.group(1), match.group(2).lower()
    method = method.upper()
    if action == "import":
        return Route(IMPORT if method == "POST" else OTHER, image_id)
    if method == "PUT":
        return Route(UPLOAD if action == "file" else STAGE, image_id)
    if method in ("GET", "HEAD") and action == "file":
        return Route(DOWNLOAD, image_id)
    # Glance answers 405 to any other method on these paths.
    return Route(OTHER, image_id)


def is_uuid(value: str) -> bool:
    """Only the canonical 8-4-4-4-12 form: Glance stores ids that way and
    looks them up verbatim."""
    return _UUID.fullmatch(value) is not None
