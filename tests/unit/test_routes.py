"""How the gateway reads a request as Glance routes it (policy/routes.py),
with plain values: tables of spellings, and hypothesis over generated ones."""

from __future__ import annotations

import string
from urllib.parse import unquote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from policy.routes import (AMBIGUOUS, CHANGE, CREATE, DOWNLOAD, IMPORT, OTHER, STAGE, UPLOAD, Route, classify, is_uuid,
                           normalize)

ID = "0cb9328d-dd8c-41bb-b378-404b854b93b9"


# Each expectation is Glance 33's own routing (tests/test_glance_routing.py
# checks the gateway against it), or AMBIGUOUS where a lenient WSGI stack
# would route it otherwise.
@pytest.mark.parametrize("method, path, kind", [
    ("PUT", f"/v2/images/{ID}/file", UPLOAD),
    ("PUT", f"/v2/images/{ID}/stage", STAGE),
    ("GET", f"/v2/images/{ID}/file", DOWNLOAD),
    ("PUT", f"/v2/images/{ID}/file?x=1", UPLOAD),
    ("PUT", f"//v2//images//{ID}//file", UPLOAD),  # paste's URLMap collapses `//`
    ("PUT", f"/v2/images/{ID}%2Ffile", UPLOAD),
    ("PUT", f"/v2/images/{ID}/%66ile", UPLOAD),
    ("PUT", f"/v2/images/{ID}/file%0a", UPLOAD),  # routes' `$` matches before a final newline
    ("PUT", f"//v2//images/{ID}/file/", AMBIGUOUS),  # Glance: 404; a lenient stack: an upload
    ("PUT", f"/v2/./images/x/../{ID}/file", AMBIGUOUS),
    ("PUT", f"/V2/IMAGES/{ID}/FILE", AMBIGUOUS),
    ("PUT", f"/v2/images/{ID}/file;p=1", AMBIGUOUS),
    ("PUT", f"/v2/images/{ID};p/file", AMBIGUOUS),  # Glance: an upload into image "{ID};p"
    ("put", f"/v2/images/{ID}/file", AMBIGUOUS),  # Glance: 405
    ("POST", f"/v2/images/{ID}/file", OTHER),
    ("HEAD", f"/v2/images/{ID}/file", OTHER),  # Glance: 405
    ("POST", f"/v2/images/{ID}/import", IMPORT),
    ("POST", f"//v2/images/{ID}/%69mport/", AMBIGUOUS),
    ("GET", f"/v2/images/{ID}/import", OTHER),
    ("GET", "/v2/images", OTHER),
    ("PUT", f"/v2/images/{ID}", OTHER),
    ("PUT", f"/v2.1/images/{ID}/file", UPLOAD),
    ("PUT", f"/v2.17/images/{ID}/file", UPLOAD),
    ("PUT", f"/v2.0/images/{ID}/stage", STAGE),
    ("PUT", f"/v3/images/{ID}/file", OTHER),
    ("PUT", f"/images/{ID}/file", OTHER),
    ("PUT", f"/v2/images/{ID}/file.json", OTHER),
    ("PUT", f"/healthcheck/v2/images/{ID}/file", OTHER),
    ("PUT", f"/versions/images/{ID}/file", OTHER),
    # what may change the bytes an image stores (its locations, status, owner)
    ("DELETE", f"/v2/images/{ID}", CHANGE),
    ("PATCH", f"//v2/images/{ID}", CHANGE),
    ("PATCH", f"//v2/images/{ID}/", AMBIGUOUS),
    ("GET", f"/v2/images/{ID}?_method=DELETE", CHANGE),
    ("DELETE", f"/v2/stores/fs2/{ID}", CHANGE),
    ("POST", f"/v2/images/{ID}/locations", CHANGE),
    ("GET", f"/v2/images/{ID}", OTHER),
    ("GET", f"/v2/images/{ID}/locations", OTHER),
    ("DELETE", f"/v2/images/{ID}/tags/t", OTHER),
    ("DELETE", f"/v2/images/{ID}/members/m", OTHER),
])
def test_classify(method, path, kind):
    route = classify(method, path)
    assert route.kind == kind
    if kind not in (OTHER, AMBIGUOUS):
        assert route.image_id == ID


VND = "application/vnd.openstack.images-"


@pytest.mark.parametrize("accept, path, kind", [
    (f"{VND}v2", f"/images/{ID}/file", UPLOAD),
    (f"{VND}v2.9", f"/images/{ID}/stage", STAGE),
    (f"{VND}v2", f"/v2/images/{ID}/file", OTHER),  # Glance: /v2/v2/...
    (f"{VND}v3", f"/images/{ID}/file", OTHER),
    ("application/json", f"/v2/images/{ID}/file", UPLOAD),
    # WebOb's normalised value, which Glance reads: no q=1, no empty items
    (f"{VND}v2;q=1", f"/images/{ID}/file", UPLOAD),
    (f"{VND}v2 ; q=1.000", f"/images/{ID}/file", UPLOAD),
    (f"{VND}v2,", f"/images/{ID}/file", UPLOAD),
    (f", ,{VND}v2", f"/images/{ID}/file", UPLOAD),
    (f"{VND}V2", f"/images/{ID}/file", AMBIGUOUS),  # Glance: 300; the lenient reading: an upload
    (f"{VND}v2, */*", f"/images/{ID}/file", OTHER),
    # an invalid value: Glance takes the version from the path
    (f"{VND}v2;q=2", f"/v2/images/{ID}/file", UPLOAD),
    (f"{VND}v2;q=2", f"/images/{ID}/file", OTHER),
])
def test_classify_follows_glance_version_negotiation(accept, path, kind):
    assert classify("PUT", path, accept).kind == kind


@pytest.mark.parametrize("method, path, content_type, kind", [
    ("POST", f"/v2/images/{ID}/file?_method=PUT", "", UPLOAD),
    ("GET", f"/v2/images/{ID}/file?_method=put", "", UPLOAD),
    ("POST", f"/v2/images/{ID}/stage?a=1&_method=PUT", "", STAGE),
    ("POST", f"/v2/images/{ID}/file?x;_method=PUT", "", UPLOAD),  # WebOb splits on `;` too
    ("POST", f"/v2/images/{ID}/file?_method=PUT;x=1", "", UPLOAD),
    ("POST", f"/v2/images/{ID}/file?_method=%50ut", "", UPLOAD),
    ("POST", f"/v2/images/{ID}/file?_method=GET&_method=PUT", "", UPLOAD),  # the last one
    ("POST", f"/v2/images/{ID}/file?%5Fmethod=PUT", "", OTHER),  # routes looks for `_method` verbatim
    ("POST", f"/v2/images/{ID}/file?_method=x&%5Fmethod=PUT", "", UPLOAD),  # then WebOb decodes the key
    ("POST", f"/v2/images/{ID}/file?_method=PUT+", "", OTHER),  # "PUT ": Glance answers 405
    ("PUT", f"/v2/images/{ID}/file?_method=GET", "", DOWNLOAD),
    ("POST", f"/v2/images/{ID}/file?_method=DELETE", "", OTHER),
    ("PATCH", f"/v2/images/{ID}?_method=%ff", "", CHANGE),  # undecodable: no override
    # a form POST: routes takes `_method` from the body, which the gateway decides before
    ("POST", f"/v2/images/{ID}/file", "application/x-www-form-urlencoded", AMBIGUOUS),
    ("POST", f"/v2/images/{ID}/file", "Multipart/Form-Data; boundary=x", AMBIGUOUS),
    ("POST", f"/v2/images/{ID}", "application/x-www-form-urlencoded", AMBIGUOUS),
    ("POST", f"/v2/images/{ID}/file?_method=", "application/x-www-form-urlencoded", OTHER),  # not read then
    ("POST", "/v2/images", "application/x-www-form-urlencoded", AMBIGUOUS),  # a create, or what the body names
    ("POST", "/v2/images", "application/json", CREATE),
    ("POST", "/v2//images%0a", "application/json", CREATE),  # as Glance routes it (the oracle)
    ("POST", f"/v2/images/{ID}/file", "application/octet-stream", OTHER),
])
def test_classify_follows_method_override(method, path, content_type, kind):
    assert classify(method, path, None, content_type).kind == kind


def test_is_uuid():
    assert is_uuid(ID) and is_uuid(ID.upper())
    assert not any(map(is_uuid, ["", "x", ID[:-1], ID + "0", ID.replace("-", ""), "{" + ID + "}"]))


URL_CHARS = string.ascii_letters + string.digits + "-._~/;=&+:@!$'()*,"
SEGMENT = st.text(alphabet=string.ascii_letters + string.digits + "-_~", min_size=1, max_size=8)


def percent_encode(draw, text: str) -> str:
    """Some of the characters of text, percent-encoded (in either hex case)."""
    out = []
    for ch in text:
        if draw(st.booleans()):
            code = "".join(f"%{b:02X}" for b in ch.encode())
            out.append(code.lower() if draw(st.booleans()) else code)
        else:
            out.append(ch)
    return "".join(out)


def randomly_cased(draw, word: str) -> str:
    return "".join(c.upper() if draw(st.booleans()) else c for c in word)


@st.composite
def separators(draw) -> str:
    """What a router resolves to one "/": duplicate slashes, dot segments, x/.."""
    parts = draw(st.lists(st.sampled_from(["/", "//", "/./", "/SEG/../"]), min_size=1, max_size=3))
    return "".join(p.replace("SEG", draw(SEGMENT)) for p in parts)


@st.composite
def upload_requests(draw) -> tuple[str, str, str, str, Route]:
    """(method, path, accept, content_type, expected route) of a request Glance
    routes to an image-data upload, spelled in one of the ways the gateway must see through."""
    image_id = str(draw(st.uuids()))
    image_id = image_id.upper() if draw(st.booleans()) else image_id
    action = draw(st.sampled_from(["file", "stage"]))
    version = draw(st.sampled_from(["v2"] + [f"v2.{n}" for n in range(19)]))
    by_accept = draw(st.booleans())  # version negotiation by media type: no version in the path
    segments = ["images", image_id, randomly_cased(draw, action)]
    accept = f"application/vnd.openstack.images-{version}" if by_accept else ""
    if not by_accept:
        segments.insert(0, randomly_cased(draw, version))
    path = "".join(draw(separators()) + segment for segment in segments)
    path += draw(st.sampled_from(["", "/", "//", "/."]))
    path = percent_encode(draw, path)
    if draw(st.booleans()):
        path += ";" + draw(st.text(alphabet=URL_CHARS, max_size=10))
    method, content_type, query = "PUT", draw(st.sampled_from(["", "application/octet-stream"])), ""
    override = draw(st.sampled_from(["none", "query", "form"]))
    if override != "none":  # routes' _method override, or a form POST whose body may carry one
        method = draw(st.sampled_from(["POST", "GET", "PATCH", "DELETE", "HEAD"]))
    if override == "query":
        query = f"_method={randomly_cased(draw, 'put')}"
    if override == "form":
        method = "POST"
        content_type = draw(st.sampled_from(["application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]))
    extra = draw(st.text(alphabet=URL_CHARS + "%?#", max_size=12))
    if query or draw(st.booleans()):
        path += "?" + "&".join(q for q in (query, extra) if q)
    return method, path, accept, content_type, Route(UPLOAD if action == "file" else STAGE, image_id)


@given(upload_requests())
def test_every_spelling_of_an_upload_is_classified_as_one_or_refused(request):
    """Glance routes some of these spellings to the upload, others nowhere
    (tests/test_glance_routing.py tells which): none passes unpoliced."""
    method, path, accept, content_type, expected = request
    assert classify(method, path, accept or None, content_type) in (expected, Route(AMBIGUOUS))


@given(st.text(), st.text(), st.text(), st.text())
def test_classify_never_raises(method, path, accept, content_type):
    classify(method, path, accept, content_type)


@given(st.text())
def test_normalize_gives_a_canonical_path(path):
    norm = normalize(path)
    assert norm.startswith("/") and "//" not in norm and ";" not in norm
    assert norm == "/" or not norm.endswith("/")
    assert not {".", ".."} & set(norm.split("/"))


@given(st.text())
def test_normalize_is_idempotent(path):
    # normalize decodes once, as the WSGI server does: a second pass would
    # decode what the first produced, and split at a decoded ? or #.
    assume(not set("%?#") & set(unquote(path)))
    assert normalize(normalize(path)) == normalize(path)


@st.composite
def encoded_variants(draw) -> tuple[str, str]:
    """A path, and the same path with some characters of its path part percent-encoded."""
    base = draw(st.one_of(st.text(alphabet=URL_CHARS + "?#", max_size=40),
                          upload_requests().map(lambda r: unquote(r[1]).replace("%", ""))))
    cut = min((i for i in (base.find("?"), base.find("#")) if i >= 0), default=len(base))
    return base, percent_encode(draw, base[:cut]) + base[cut:]


@given(encoded_variants(), st.sampled_from(["PUT", "POST", "GET"]))
def test_percent_encoding_the_path_changes_nothing(variants, method):
    plain, encoded = variants
    assert classify(method, encoded) == classify(method, plain)
