"""Which requests are uploads, read the way Glance 33's stack will route them.

Glance's reading, layer by layer (the cloud-in-a-box's, and tests/support/glance_oracle.py's):
gunicorn makes PATH_INFO of the target's path, percent-decoded to latin-1 and
nothing else; paste's URLMap collapses `//`; Glance's version negotiation
takes the version from WebOb's *normalised* Accept, or else pops it off the
path; routes takes the method from a `_method` in the query as WebOb parses it
(split on `&` and `;`), or from a form POST's body, then matches its
case-sensitive patterns. The gateway reads each request so, with WebOb itself.

A second, lenient reading (the path decoded, dot segments, `//`, `;params`,
case and trailing slashes resolved: what another WSGI server or a front end
may do) keeps deployments that differ covered. Where the readings disagree on
a request either would police, or where a form POST's body may name the
method, the gateway cannot be certain: AMBIGUOUS, which it refuses."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from urllib.parse import unquote, unquote_to_bytes, urlsplit

import webob

UPLOAD = "upload"
STAGE = "stage"
IMPORT = "import"
DOWNLOAD = "download"
CHANGE = "change"  # may change what the image stores: update, delete, a store's copy, a new location
CREATE = "create"  # POST /v2/images: one more image for the owner's image_count_total
OTHER = "other"
AMBIGUOUS = "ambiguous"  # Glance may read it another way than the gateway: refused
POLICED = frozenset({UPLOAD, STAGE, IMPORT, CHANGE, CREATE})

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# The routes of Glance's v2 router (glance/api/v2/router.py) that the gateway
# polices, as routes 2.5 compiles them: `{var}` is `[^/]+?`, and `$` also
# matches before a final newline. Image data, and what changes an image's
# locations, status or owner: what its image_size_total counts; and a create,
# one more image for image_count_total.
_ROUTES = ((r"^/images$", {"POST": CREATE}),
           (r"^/images/(?P<image_id>[^/]+?)/file$", {"PUT": UPLOAD, "GET": DOWNLOAD}),
           (r"^/images/(?P<image_id>[^/]+?)/stage$", {"PUT": STAGE}),
           (r"^/images/(?P<image_id>[^/]+?)/import$", {"POST": IMPORT}),
           (r"^/images/(?P<image_id>[^/]+?)$", {"PATCH": CHANGE, "DELETE": CHANGE}),
           (r"^/stores/[^/]+?/(?P<image_id>[^/]+?)$", {"DELETE": CHANGE}),
           (r"^/images/(?P<image_id>[^/]+?)/locations$", {"POST": CHANGE}))
_GLANCE = tuple((re.compile(p), kinds) for p, kinds in _ROUTES)
_LENIENT = tuple((re.compile(p, re.IGNORECASE), kinds) for p, kinds in _ROUTES)
# What a form's `_method` may name, when the gateway cannot see the body.
_METHODS = frozenset(method for _, kinds in _ROUTES for method in kinds)
# Every version any configuration of Glance 33 maps to v2 (VersionNegotiationFilter).
_GLANCE_V2 = frozenset({"v2"} | {f"v2.{n}" for n in range(19)})
# The lenient reading's: a superset (a path Glance answers with 300 costs nothing).
_V2 = re.compile(r"v2(\.\d+)?", re.IGNORECASE)
_VND = "application/vnd.openstack.images-"
_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


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


def wsgi_header(values: list[bytes]) -> str | None:
    """A header's environ value, as gunicorn makes it: latin-1, repeats joined by `,`."""
    return ",".join(value.decode("latin-1") for value in values) if values else None


def classify(method: str, target: str, accept: str | None = None, content_type: str | None = None) -> Route:
    """The route of a request: `target` as it is sent to Glance, `accept` and
    `content_type` as environ values (wsgi_header)."""
    path_info, query = _wsgi_path(target)
    request = webob.Request({"QUERY_STRING": query} if accept is None else
                            {"QUERY_STRING": query, "HTTP_ACCEPT": accept})
    negotiated = str(request.accept)  # what VersionNegotiationFilter compares
    methods = {_override(request, query) or method}
    if "_method" not in query and method.upper() == "POST" and _form(content_type or ""):
        methods |= _METHODS  # routes reads `_method` from the body, after the gateway decided
    glance, lenient = _glance_api_path(path_info, negotiated), api_path(target, negotiated)
    exact = {_match(_GLANCE, glance, m) for m in methods}
    routes = exact | {_match(_LENIENT, lenient, m.upper()) for m in methods}
    if len(routes) == 1:
        return routes.pop()
    if any(r.kind in POLICED for r in routes):
        return Route(AMBIGUOUS)
    return exact.pop() if len(exact) == 1 else Route(OTHER)


def _wsgi_path(target: str) -> tuple[str, str]:
    """PATH_INFO and QUERY_STRING, as gunicorn builds them (split_request_uri)."""
    try:
        if target.startswith("//"):  # urlsplit would take it for an authority
            parts = urlsplit("." + target)
            parts = parts._replace(path=parts.path[1:])
        else:
            parts = urlsplit(target)
    except ValueError:  # gunicorn answers 400
        return "", ""
    return unquote_to_bytes(parts.path).decode("latin-1"), parts.query


def _override(request: webob.Request, query: str) -> str | None:
    """routes' method override from the query (RoutesMiddleware)."""
    if "_method" not in query:
        return None
    try:
        method = request.GET.get("_method")
    except UnicodeDecodeError:
        return None
    return method.upper() if method else None


def _form(content_type: str) -> bool:
    """routes' is_form_post, and any spelling another server may read as one."""
    return any(item.split(";", 1)[0].strip().lower() in _FORMS for item in content_type.split(","))


def _glance_api_path(path_info: str, accept: str) -> str | None:
    """PATH_INFO as Glance's v2 router gets it, or None where it never does."""
    if path_info and not path_info.startswith("/"):
        return None
    path = re.sub("//+", "/", path_info)  # the root URLMap
    if path == "/healthcheck" or path.startswith("/healthcheck/"):
        return None
    if path.lstrip("/").split("/", 1)[0] == "versions":
        return None
    if accept.startswith(_VND):  # media-type versioning: the path keeps its first segment
        version, rest = accept[len(_VND):], path
    else:
        version, slash, rest = path.lstrip("/").partition("/")
        rest = slash + rest
    if version not in _GLANCE_V2:
        return None
    path = re.sub("//+", "/", "/v2" + rest)  # rootapp's URLMap
    return path[3:] if path == "/v2" or path.startswith("/v2/") else None


def _match(routes, path: str | None, method: str) -> Route:
    for pattern, kinds in routes:
        if path is not None and (found := pattern.match(path)):
            return Route(kinds[method], found.groupdict().get("image_id") or "") if method in kinds else Route(OTHER)
    return Route(OTHER)


def normalize(path: str) -> str:
    """The path as a lenient WSGI stack might see it: no query or params,
    decoded, duplicate slashes and dot segments resolved, no trailing slash."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    path = unquote(path).split(";", 1)[0]
    path = re.sub(r"/{2,}", "/", path)
    path = posixpath.normpath("/" + path.lstrip("/"))
    return path.rstrip("/") or "/"


def api_path(path: str, accept: str = "") -> str | None:
    """The lenient reading of the path below the version, or None where Glance
    answers with its version list instead."""
    path = normalize(path)
    if accept.startswith(_VND):
        return path if _V2.fullmatch(accept[len(_VND):]) else None
    version, _, rest = path.lstrip("/").partition("/")
    return "/" + rest if _V2.fullmatch(version) else None


def is_uuid(value: str) -> bool:
    """Only the canonical 8-4-4-4-12 form: Glance stores ids that way and
    looks them up verbatim."""
    return _UUID.fullmatch(value) is not None
