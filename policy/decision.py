"""The upload rules of the spec's status table, as pure functions of plain values.

Each rule returns a Refusal (policy/refusal.py), or None to go on. The order
the rules run in lives in policy.gate.
"""

from __future__ import annotations

from dataclasses import dataclass

from policy.refusal import QuotaFigures, Refusal

OCTET_STREAM = "application/octet-stream"


# Glance's own answers, named after the spec's rules so that metrics group a
# refusal the same way whichever side made it.
UPSTREAM_REASONS = {400: "bad_request", 401: "token", 403: "forbidden", 404: "not_found",
                    409: "status", 410: "gone", 413: "quota", 415: "content_type",
                    500: "upstream_error", 503: "upstream_unavailable"}


def upstream_reason(status: int) -> str:
    if status < 400:
        return "ok"
    return UPSTREAM_REASONS.get(status, "upstream_error" if status >= 500 else "bad_request")


@dataclass(frozen=True)
class Identity:
    user_id: str
    project_id: str
    roles: frozenset[str]
    expires_at: float  # epoch seconds


@dataclass(frozen=True)
class Image:
    id: str
    owner: str | None
    status: str
    disk_format: str | None
    container_format: str | None
    size: int | None = None
    stores: tuple[str, ...] = ()  # where Glance stores its data


def bad_id(image_id: str) -> Refusal:
    return Refusal(400, "bad_id", f"Image id {image_id[:64]!r} is not a UUID.")


def bad_token(detail: str) -> Refusal:
    return Refusal(401, "token", f"The request you have made requires authentication: {detail}.")


def unavailable(dependency: str, detail: str, reason: str = "upstream_unavailable") -> Refusal:
    """reason: "misconfigured" when the dependency refuses the gateway's own
    identity or URL (policy.exceptions.Misconfigured): the detail says what to fix."""
    return Refusal(503, reason, f"{dependency} is unavailable, so the upload cannot be checked: {detail}.")


def too_many_connections(address: str, cap: int) -> Refusal:
    return Refusal(429, "too_many_connections",
                    f"More than {cap} connections from {address}; close some and retry.")


def internal() -> Refusal:
    """An unexpected error inside the gateway: the request ends here, never forwarded."""
    return Refusal(503, "internal", "The gateway failed to check the request, so it was not forwarded.")


def parse_image_size(raw: bytes | None) -> int | None:
    """`x-openstack-image-size` as Glance 33 reads it (RequestDeserializer.
    _get_image_size): gunicorn hands it over latin-1 decoded, duplicates joined
    by ",", and Glance calls int() on it. Raises ValueError where Glance answers 400."""
    return None if raw is None else int(raw.decode("latin-1"))


def check_image_size(raw: bytes | None) -> Refusal | None:
    try:
        parse_image_size(raw)
    except ValueError:
        return Refusal(400, "bad_request", "Invalid or missing image size in request headers.")
    return None


def check_media_type(content_type: str | None) -> Refusal | None:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type == OCTET_STREAM:
        return None
    shown = media_type or "none"
    return Refusal(415, "content_type",
                    f"Content-Type {shown!r} is not supported; image data must be {OCTET_STREAM}.")


def check_body(content_length: int | None, chunked: bool) -> Refusal | None:
    """An upload with no body: Content-Length 0, or neither a length nor chunking."""
    if chunked or (content_length or 0) > 0:
        return None
    return empty_body()


def empty_body() -> Refusal:
    return Refusal(500, "empty_body", "The image data is empty; an upload must carry data.")


def check_owner(image: Image | None, caller: Identity, admin_roles: frozenset[str]) -> Refusal | None:
    if image is None or image.status in ("deleted", "pending_delete"):
        return Refusal(404, "not_found", "No image found with that id.")
    if image.owner != caller.project_id and not (caller.roles & admin_roles):
        return Refusal(403, "forbidden",
                        "Only the image owner's project, or an admin, may upload image data.")
    return None


def check_image(image: Image | None, caller: Identity, admin_roles: frozenset[str]) -> Refusal | None:
    if refusal := check_owner(image, caller, admin_roles):
        return refusal
    assert image is not None
    if not image.disk_format or not image.container_format:
        return Refusal(400, "formats",
                        "The image's disk_format and container_format must be set before data is uploaded.")
    if image.status != "queued":
        return Refusal(409, "status",
                        f"Image status is {image.status!r}; data can only be uploaded to a 'queued' image.")
    return None


BYTES_STORED, BYTES_STAGED = "image_size_total", "image_stage_total"
IMAGES, UPLOADS = "image_count_total", "image_count_uploading"


def size(n: int) -> str:
    """Bytes for a person: binary units, one decimal."""
    value, unit = float(n), "bytes"
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            break
        value /= 1024
    return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"


def quota_exceeded(f: QuotaFigures) -> Refusal:
    """413 naming the resource, the project's usage, its limit and what the
    request needed; exact figures after the readable ones, to match the ledger."""
    if f.resource in (BYTES_STORED, BYTES_STAGED):
        verb = "stores" if f.resource == BYTES_STORED else "stages"
        what = "this upload" if f.resource == BYTES_STORED else "this stage"
        text = f"{f.project} {verb} {size(f.used)} of {size(f.limit)}; {what} needs {size(f.needed)}"
        unit = " bytes"
    elif f.resource == IMAGES:
        text = f"{f.project} owns {f.used} images of {f.limit}; this request creates {f.needed} more"
        unit = " images"
    else:
        text = f"{f.project} has {f.used} uploads in progress of {f.limit}; this upload needs {f.needed} more"
        unit = " uploads"
    return Refusal(413, "quota", f"Quota {f.resource} exceeded: {text} "
                                  f"(used or reserved {f.used}{unit}, limit {f.limit}, needed {f.needed}).", f)


IMPORT_BODY_LIMIT = 64 * 1024  # an import or an image create is a small JSON document


def check_import_body(content_length: int | None) -> Refusal | None:
    """The gateway reads an import's (or a quota'd create's) body before
    deciding: bound it, and only with a declared length."""
    if content_length is not None and content_length <= IMPORT_BODY_LIMIT:
        return None
    return Refusal(400, "bad_request",
                    f"An import request (or an image create under an image quota) must declare a "
                    f"Content-Length of at most {IMPORT_BODY_LIMIT} bytes.")


def unknown_size_import(method: str) -> Refusal:
    return Refusal(413, "quota",
                    f"Import method {method!r} brings data of unknown size; this gateway's quota refuses it.")


def ambiguous() -> Refusal:
    """Glance's stack may read the request's method, version or path another
    way than the gateway (policy.routes.AMBIGUOUS): it is not forwarded."""
    return Refusal(400, "ambiguous", "Glance may route this request other than the gateway reads it; "
                                      "send it as Glance's API documents it.")


def unknown_size_location() -> Refusal:
    return Refusal(413, "quota", "A location's data is of unknown size until Glance reads it; "
                                  "this gateway's quota refuses adding one to an image of a project with a limit.")


def plaintext() -> Refusal:
    """Plain HTTP on a port that serves HTTPS (gateway.tls_cert_file)."""
    return Refusal(400, "bad_request", "This port serves HTTPS only.")
