"""Property-based tests (hypothesis) of policy/ with plain values: route
classification over generated spellings of upload paths, and the decision
table over generated tokens, headers, images and quotas."""

from __future__ import annotations

import asyncio
import string
from urllib.parse import unquote

from hypothesis import assume, given
from hypothesis import strategies as st

from policy import config as configuration
from policy.decision import Identity, Image, check_quota
from policy.exceptions import InvalidToken, Unavailable
from policy.gate import UploadRequest
from policy.routes import AMBIGUOUS, STAGE, UPLOAD, Route, classify, normalize
from tests.support.fakes import config, upload_gate

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


# -- the decision table -------------------------------------------------------------

UNLIMITED = configuration.UNLIMITED
# The spec's rules in order, by the status each gives; 0: the status depends on the failure (401 or 503).
RULES = [400, 401, 0, 415, 500, 0, 404, 403, 400, 409, 503, 413]


@st.composite
def decision_cases(draw) -> tuple[tuple, int | None]:
    """(the inputs of one decision, the status the spec gives them): the first
    rule at fault is drawn first; every rule before it holds, every rule after
    it may hold or not, and must not matter."""
    first = draw(st.integers(0, len(RULES)))  # len(RULES): none at fault

    def rule(i, holds, fails):
        return draw(holds if i < first else fails if i == first else holds | fails)

    image_id = rule(0, st.uuids().map(str), st.sampled_from(["not-a-uuid", "", "0cb9328d-dd8c-41bb-b378-404b854b93bz"]))
    tokens = rule(1, st.sampled_from([["tok"], [" tok "]]), st.sampled_from([[], ["tok", "tok"], [""], ["t\x01k"]]))
    check = rule(2, st.just("valid"), st.sampled_from([InvalidToken("expired"), Unavailable("keystone", "timeout")]))
    media = rule(3, st.sampled_from(["application/octet-stream", "Application/Octet-Stream; x=1"]),
                 st.sampled_from([None, "", "text/plain", "application/octet-streamx"]))
    length, chunked = rule(4, st.just((None, True)) | st.tuples(st.integers(1, 2**40), st.just(False)),
                           st.sampled_from([(0, False), (None, False)]))
    lookup = rule(5, st.just("answers"), st.sampled_from([InvalidToken("refused"), Unavailable("glance", "down")]))
    exists = rule(6, st.just(None), st.sampled_from(["none", "deleted", "pending_delete"]))
    may_write = rule(7, st.sampled_from(["owner", "admin"]), st.just("other"))
    formats = rule(8, st.tuples(st.sampled_from(["raw", "qcow2"]), st.sampled_from(["bare", "ovf"])),
                   st.sampled_from([(None, "bare"), ("raw", None), ("", "bare"), (None, None)]))
    status = rule(9, st.just("queued"), st.sampled_from(["saving", "active", "killed", "importing", "uploading"]))
    usage_known = rule(10, st.just(True), st.just(False))
    fits = rule(11, st.just(True), st.just(False))

    project = draw(st.sampled_from(["projA", "projB"]))
    roles = draw(st.sets(st.sampled_from(["member", "reader"])))
    owner = {"owner": project, "admin": draw(st.sampled_from([project, "projC", None])),
             "other": draw(st.sampled_from(["projC", None]))}[may_write]
    caller = Identity("user", project, frozenset(roles | ({"admin"} if may_write == "admin" else set())), 10**10)
    image = (None if exists == "none"
             else Image("id", owner, exists or status, *formats))
    # The room an upload needs: its declared length; a chunked body of unknown
    # size needs at least one byte, so a project exactly at its limit refuses it.
    need = length or 1
    if not usage_known:
        usage, limit = Unavailable("glance", "down"), draw(st.integers(0, 2**40))
    elif fits:
        usage = draw(st.integers(0, 2**40))
        limit = draw(st.just(UNLIMITED) | st.integers(usage + need, usage + need + 2**40))
    else:
        usage = draw(st.integers(0, 2**40))
        limit = draw(st.integers(0, usage + need - 1))

    outcome = caller if check == "valid" else check
    found = image if lookup == "answers" else lookup
    failure = {2: check, 5: lookup}.get(first)
    expected = (None if first == len(RULES)
                else RULES[first] or (401 if isinstance(failure, InvalidToken) else 503))
    return (image_id, tokens, outcome, media, length, chunked, found, usage, limit), expected


def decide(image_id, tokens, outcome, media, length, chunked, image, usage, limit) -> int | None:
    gate = upload_gate(config(limit, wait_seconds=0), outcome, image, usage)  # no wait for room: no one frees it
    request = UploadRequest(Route(UPLOAD, image_id), tokens, media, length, chunked)
    verdict = asyncio.run(gate.decide(request))
    return verdict.refusal.status if verdict.refusal else None


@given(decision_cases())
def test_the_first_rule_at_fault_in_spec_order_decides(case):
    inputs, expected = case
    assert decide(*inputs) == expected


@given(st.text(), st.lists(st.text(), max_size=3), st.none() | st.text(), st.none() | st.integers(0),
       st.booleans(), st.none() | st.builds(Image, st.text(), st.none() | st.text(), st.text(), st.none() | st.text(),
                                             st.none() | st.text()),
       st.integers(0), st.integers(UNLIMITED))
def test_a_refusal_is_always_one_of_the_spec(image_id, tokens, media, length, chunked, image, usage, limit):
    caller = Identity("user", "projA", frozenset({"member"}), 10**10)
    status = decide(image_id, tokens, caller, media, length, chunked, image, usage, limit)
    assert status in {None, 400, 401, 403, 404, 409, 413, 415, 500, 503}


@given(st.integers(0, 2**50), st.integers(0, 2**50), st.integers(0, 2**50), st.integers(0, 2**50))
def test_quota_is_monotone_in_size(size, more, usage, limit):
    if check_quota(size, usage, limit):
        assert check_quota(size + more, usage, limit), "a larger upload passed where a smaller was refused"
    assert check_quota(size + more, usage, configuration.UNLIMITED) is None
    assert check_quota(max(limit - usage, 0), min(usage, limit), limit) is None  # exactly full is allowed
