"""Glance's own router as the oracle of the gateway's reading of a request.

Every request that Glance 33 would route to an upload, a stage, an import or
a change of an image must be read as that by the gateway, for the same image,
or refused as ambiguous. tests/support/glance_oracle.py resolves each request with
Glance's own pipeline (gunicorn, WebOb, version negotiation, routes) in the
cloud's Glance venv; the gateway's side is what the addon runs (the client's
bytes parsed by mitmproxy, ForwardedHeaders, glance_gate.read_route), and
what reaches the oracle is what mitmproxy would send. The seeds are
tests/support/routing_corpus.txt; hypothesis grows variants of them and of generated
requests, in batches to the oracle."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy.routes import AMBIGUOUS, CHANGE, IMPORT, STAGE, UPLOAD
from tests.support.routing import ID, Oracle, Variant, corpus, through_gateway

# Glance's actions the gateway polices, and what it must read them as.
POLICED = {("ImageDataController", "upload"): UPLOAD, ("ImageDataController", "stage"): STAGE,
           ("ImagesController", "import_image"): IMPORT, ("ImagesController", "update"): CHANGE,
           ("ImagesController", "delete"): CHANGE, ("ImagesController", "delete_from_store"): CHANGE,
           ("ImagesController", "add_location"): CHANGE}
BATCH, BATCHES = 25, 400  # 10,000 generated variants


@pytest.fixture(scope="module")
def oracle(cloud):
    oracle = Oracle(Path(cloud["venvs"]["glance"]) / "bin" / "python")
    yield oracle
    oracle.close()


def differ(oracle: Oracle, variants: list[Variant]) -> Counter:
    """Fails on every variant Glance runs a policed action for that the gateway
    reads as anything weaker; counts what Glance did with them."""
    read = [(v, through) for v in variants if (through := through_gateway(v))]
    answers = oracle.route([head for _, (_, head) in read])
    tally, failures = Counter(refused_by_mitmproxy=len(variants) - len(read)), []
    for (variant, (route, _)), glance in zip(read, answers):
        kind = POLICED.get((glance.get("controller"), glance.get("action")))
        tally[f"{glance['action']} ({route.kind})" if kind else "unpoliced"] += 1
        if kind and route.kind != AMBIGUOUS and (route.kind, route.image_id) != (kind, glance["image_id"]):
            failures.append(f"{variant}\n    Glance: {glance['action']} of {glance['image_id']!r}, gateway: {route}")
    assert not failures, f"{len(failures)} of {len(variants)} read weaker than Glance routes them:\n" + \
        "\n".join(failures[:20])
    return tally


SEEDS = corpus()


def test_the_corpus_reads_as_glance_routes_it(oracle):
    assert len(SEEDS) > 80
    tally = differ(oracle, SEEDS)
    assert sum(n for k, n in tally.items() if "(" in k) > 40, tally  # most seeds reach a policed action


# -- generated variants --------------------------------------------------------------

METHODS = ["PUT", "POST", "GET", "PATCH", "DELETE", "HEAD", "OPTIONS", "put", "Put", "patch", "delete", "TRACE"]
VERSIONS = ["v2", "v2", "v2", "v2.0", "v2.1", "v2.9", "v2.18", "v2.19", "v2.01", "V2", "v3", "versions",
            "healthcheck", "x"]
RESOURCES = ["images/{id}/file", "images/{id}/file", "images/{id}/stage", "images/{id}/import", "images/{id}",
             "images/{id}", "stores/fs2/{id}", "images/{id}/locations", "images", "images/{id}/tags/t"]
SEPARATORS = ["/"] * 12 + ["//", "///", "/./", "/x/../", "%2F", "%2f", "/%2e/"]
SUFFIXES = [""] * 12 + ["/", "/.", "//", ";p", "%0a", "%0A", "%00", "%20", "%3B", ".json", "%2F", "#x", "\\"]
OVERRIDES = ["PUT", "put", "pUt", "%50UT", "P%55T", "PUT+", "+PUT", "PUT%20", "DELETE", "delete", "PATCH", "POST",
             "post", "GET", "", "%FF", "P%C3%9CT"]
KEYS = ["_method"] * 8 + ["%5Fmethod", "%5fmethod", "_%6Dethod", "_METHOD", "_method%00", "+_method", "_method "]
OTHER_ITEMS = ["x", "x=1", "x=_method", "=", "_methodx=PUT", "a=%", "b=%FF", "image=1"]
QUERY_SEPARATORS = ["&"] * 4 + [";"] * 4 + ["&&", ";;", "&;", ";&"]
VND = "application/vnd.openstack.images-"
ACCEPT_PARAMS = [""] * 6 + [";q=1", ";q=1.0", ";q=1.000", " ; q=1", ";Q=1", ";q=0.5", ";q=0", ";q=2", ";level=1",
                            ";q=1;level=1", ";q=1 ", ";q="]
ACCEPT_OTHER = ["*/*", "application/json", "application/json;q=0.9", "text/html", "", " ", "x", "a/b;c", "a/b;q=x"]
CONTENT_TYPES = ["application/octet-stream", "application/json", "application/x-www-form-urlencoded",
                 "multipart/form-data; boundary=b", "Application/X-WWW-Form-Urlencoded;charset=x",
                 " application/x-www-form-urlencoded", "application/x-www-form-urlencoded ;x", "text/plain"]
PREFIXES = ["/x", "/v2", "/images", "/v2/images", "/x/y"]
ENVIRON_HEADERS = ["SCRIPT_NAME", "Script_Name", "script_name", "PATH_INFO", "X_Forwarded_Prefix",
                   "X-Forwarded-Prefix", "X-Forwarded-Ssl", "X-Forwarded-Protocol", "X_Auth_Token",
                   "X_Identity_Status", "X_Roles", "REMOTE_USER", "Forwarded", "X-HTTP-Method-Override"]


def edit(draw, text: str, spellings) -> str:
    """text with a few of its characters respelled."""
    chars = list(text)
    for i in draw(st.sets(st.integers(0, max(len(chars) - 1, 0)), max_size=2)) if chars else ():
        chars[i] = spellings(chars[i])
    return "".join(chars)


def percent(ch: str) -> str:
    return "".join(f"%{b:02X}" for b in ch.encode())


@st.composite
def paths(draw, versioned: bool) -> str:
    resource = draw(st.sampled_from(RESOURCES)).replace("{id}", draw(st.sampled_from([ID, ID, ID.upper()])))
    segments = ([draw(st.sampled_from(VERSIONS))] if versioned else []) + resource.split("/")
    path = "".join(draw(st.sampled_from(SEPARATORS)) + segment for segment in segments)
    path = edit(draw, path, percent) if draw(st.booleans()) else path
    path = edit(draw, path, lambda c: percent(c).lower()) if draw(st.booleans()) else path
    path = edit(draw, path, str.swapcase) if draw(st.integers(0, 3)) == 0 else path
    return path + draw(st.sampled_from(SUFFIXES))


@st.composite
def queries(draw) -> str:
    items = draw(st.lists(st.one_of(
        st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), st.sampled_from(OVERRIDES)),
        st.sampled_from(OTHER_ITEMS)), max_size=3))
    query = ""
    for item in items:
        query += (draw(st.sampled_from(QUERY_SEPARATORS)) if query or draw(st.booleans()) else "") + item
    return query


@st.composite
def accepts(draw) -> str:
    items = draw(st.lists(st.one_of(
        st.builds(lambda v, p: VND + v + p, st.sampled_from(VERSIONS[:10]), st.sampled_from(ACCEPT_PARAMS)),
        st.sampled_from(ACCEPT_OTHER)), min_size=1, max_size=3))
    return draw(st.sampled_from([",", ", ", " ,"])).join(items)


@st.composite
def generated(draw) -> Variant:
    by_accept = draw(st.integers(0, 3)) == 0  # version negotiation by media type
    target = draw(paths(versioned=not by_accept))
    headers = [("Accept", VND + draw(st.sampled_from(VERSIONS[:10])) + draw(st.sampled_from(ACCEPT_PARAMS)))
               ] if by_accept else []
    headers += [("Accept", a) for a in draw(st.lists(accepts(), max_size=2 if by_accept else 1))]
    if draw(st.booleans()):
        target += "?" + draw(queries())
    if draw(st.integers(0, 3)) == 0:
        headers.append(("Content-Type", draw(st.sampled_from(CONTENT_TYPES))))
    for name in draw(st.lists(st.sampled_from(ENVIRON_HEADERS), max_size=2)):
        value = draw(st.sampled_from(PREFIXES + ["PUT", "Confirmed", "admin"]))
        if name.lower() == "script_name" and value in PREFIXES and draw(st.booleans()):
            target = value + target
        headers.append((name, value))
    return Variant(draw(st.sampled_from(METHODS)), target, tuple(headers))


@st.composite
def grown(draw) -> Variant:
    """A seed of the corpus, with another method, query or Accept added."""
    seed = draw(st.sampled_from(SEEDS))
    method, target, headers = seed.method, seed.target, list(seed.headers)
    change = draw(st.sampled_from(["method", "query", "accept", "path"]))
    if change == "method":
        method = draw(st.sampled_from(METHODS))
    elif change == "query":
        target += ("&" if "?" in target else "?") + draw(queries())
    elif change == "accept":
        headers.append(("Accept", draw(accepts())))
    else:
        target = edit(draw, target, percent)
    return Variant(method, target, tuple(headers))


def test_generated_variants_read_as_glance_routes_them(oracle):
    tally: Counter = Counter()

    @settings(max_examples=BATCHES, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.lists(st.one_of(generated(), grown()), min_size=BATCH, max_size=BATCH))
    def batch(variants):
        tally.update(differ(oracle, variants))

    batch()
    print(f"\n{sum(tally.values())} variants: {dict(tally.most_common())}")
    assert sum(tally.values()) >= 10_000
    policed = Counter()
    for key, n in tally.items():
        if "(" in key:
            policed[key.split(" ")[0]] += n
    assert len(policed) == 7 and min(policed.values()) >= 50, policed  # every policed action, often
