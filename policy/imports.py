"""An import request (`POST /v2/images/{id}/import`) read as Glance 33 reads it:
its raw body (WebOb never decodes a Content-Encoding), decoded as strict UTF-8
and parsed by Python's json (oslo's jsonutils.loads, glance/common/wsgi.py
JSONRequestDeserializer), and its target stores as `get_stores_from_request`
(glance/common/utils.py) takes them: `all_stores`, else the `stores` member,
iterated (a list, or a JSON object's keys), else the `X-Image-Meta-Store`
header, else the default store. What the gateway cannot read exactly so is
refused, never guessed at."""

from __future__ import annotations

import json
from dataclasses import dataclass

from policy.refusal import Refusal


@dataclass(frozen=True)
class ImportBody:
    """The request as it came: what Glance will read."""

    raw: bytes
    content_encoding: str | None = None  # every Content-Encoding header, joined
    store_header: str | None = None  # X-Image-Meta-Store, duplicates joined by "," as gunicorn joins them


@dataclass(frozen=True)
class ImportRequest:
    method: str
    stores: tuple[str, ...] | None  # the stores named, by `stores` or the header; None: the default store
    all_stores: bool


def refused(message: str) -> Refusal:
    return Refusal(400, "bad_request", message)


def parse(body: ImportBody) -> ImportRequest | Refusal:
    """The import Glance will run, or a 400 where the gateway cannot be sure which."""
    if body.content_encoding is not None:
        return refused("An import request must not carry a Content-Encoding: Glance reads its body as sent.")
    try:
        request = json.loads(body.raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return refused("Malformed JSON in request body.")
    if not isinstance(request, dict):
        return refused("An import request's body must be a JSON object.")
    method = request.get("method")
    if not isinstance(method, dict) or not isinstance(method.get("name"), str):
        return refused("Import request requires a 'method' object with a 'name' string.")
    all_stores = request.get("all_stores", False)
    if not isinstance(all_stores, bool):
        return refused("'all_stores' must be boolean value only")
    named = "stores" in request
    if (all_stores and named) or ((all_stores or named) and body.store_header is not None):
        return refused("Give the target stores one way: 'all_stores', 'stores' or the x-image-meta-store header.")
    if named:
        stores = request["stores"]
        # Glance iterates the member: a list's items, an object's keys (a string's characters: refused).
        if not isinstance(stores, (list, dict)) or not all(isinstance(s, str) for s in stores):
            return refused("'stores' must be a list of store ids.")
        return ImportRequest(method["name"], tuple(stores), all_stores)
    header = None if body.store_header is None else (body.store_header,)
    return ImportRequest(method["name"], header, all_stores)
