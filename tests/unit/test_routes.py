"""Fast tests of policy/ with plain values: no proxy, no network."""

from __future__ import annotations

import pytest

from policy.decision import Identity, Image, check_body, check_image, check_media_type
from policy.glance import stored as glance_stored
from policy.identity.cache import TokenCache
from policy.routes import AMBIGUOUS, CHANGE, CREATE, DOWNLOAD, IMPORT, OTHER, STAGE, UPLOAD, classify, is_uuid

ID = "0cb9328d-dd8c-41bb-b378-404b854b93b9"
ALICE = Identity("u1", "projA", frozenset({"member"}), expires_at=10_000)
ADMIN = Identity("u0", "admin", frozenset({"admin", "member"}), expires_at=10_000)


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


@pytest.mark.parametrize("value, ok", [
    ("application/octet-stream", True), ("APPLICATION/Octet-Stream", True),
    ("application/octet-stream; charset=x", True), (None, False), ("", False),
    ("text/plain", False), ("application/octet-streamx", False),
])
def test_media_type(value, ok):
    assert (check_media_type(value) is None) == ok
    if not ok:
        assert check_media_type(value).status == 415


def test_empty_body():
    assert check_body(0, chunked=False).status == 500
    assert check_body(None, chunked=False).status == 500
    assert check_body(None, chunked=True) is None
    assert check_body(1, chunked=False) is None


def image(**kw) -> Image:
    return Image(**{"id": ID, "owner": "projA", "status": "queued",
                    "disk_format": "raw", "container_format": "bare", **kw})


@pytest.mark.parametrize("img, who, status", [
    (None, ALICE, 404),
    (image(status="deleted"), ALICE, 404),
    (image(owner="projB"), ALICE, 403),
    (image(owner="projB"), ADMIN, None),
    (image(disk_format=None), ALICE, 400),
    (image(container_format=None), ALICE, 400),
    (image(status="active"), ALICE, 409),
    (image(status="saving"), ALICE, 409),
    (image(), ALICE, None),
])
def test_check_image(img, who, status):
    d = check_image(img, who, frozenset({"admin"}))
    assert (d.status if d else None) == status


@pytest.mark.parametrize("image, stored", [
    ({"status": "active", "size": 10, "stores": "fs"}, 10),
    ({"status": "active", "size": 10, "stores": "fs,fs2"}, 20),
    ({"status": "active", "size": 10, "stores": "fs", "os_glance_importing_to_stores": "fs2"}, 20),
    ({"status": "active", "size": 10, "locations": [{}, {}, {}]}, 30),
    ({"status": "active", "size": 10}, 10),  # single-store Glance: one location
    ({"status": "deactivated", "size": 10}, 10),  # Glance counts a deactivated image's locations
    ({"status": "deactivated", "size": 10, "stores": "fs,fs2"}, 20),
    ({"status": "uploading", "size": 10, "stores": ""}, 0),  # staged data is not stored yet
    ({"status": "queued", "size": None}, 0),
])
def test_stored_bytes_as_glance_counts_them(image, stored):
    assert glance_stored(image) == stored


def test_token_cache_never_outlives_the_token():
    now = [1000.0]
    cache = TokenCache(cache_seconds=300, timer=lambda: now[0])
    short = Identity("u", "p", frozenset(), expires_at=1010)
    cache.put("t", short)
    assert cache.get("t") == short
    now[0] = 1011
    assert cache.get("t") is None
    cache.put("t2", Identity("u", "p", frozenset(), expires_at=99_999))
    now[0] = 1011 + 301
    assert cache.get("t2") is None


def test_import_body_is_bounded():
    from policy.decision import IMPORT_BODY_LIMIT, check_import_body
    assert check_import_body(100) is None
    assert check_import_body(IMPORT_BODY_LIMIT) is None
    assert check_import_body(IMPORT_BODY_LIMIT + 1).status == 400
    assert check_import_body(None).status == 400  # chunked: no declared length


def test_single_flight_shares_one_call_and_its_outcome():
    import asyncio

    from policy.singleflight import SingleFlight

    calls = []

    async def call(outcome):
        calls.append(outcome)
        await asyncio.sleep(0.01)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def herd():
        flights = SingleFlight()
        first = asyncio.ensure_future(flights.run("k", lambda: call("first")))
        await asyncio.sleep(0)
        rest = [asyncio.ensure_future(flights.run("k", lambda: call("other"))) for _ in range(5)]
        await asyncio.sleep(0)
        first.cancel()  # the first caller leaves: the others still get the answer
        values = await asyncio.gather(*rest)
        failing = [flights.run("e", lambda: call(ValueError("no"))) for _ in range(3)]
        errors = await asyncio.gather(*failing, return_exceptions=True)
        return values, errors, flights.pending("k")

    values, errors, pending = asyncio.run(herd())
    assert values == ["first"] * 5 and not pending
    assert [type(e) for e in errors] == [ValueError] * 3
    assert len(calls) == 2  # one per key


@pytest.mark.parametrize("peer, forwarded, counted", [
    ("10.0.0.1", ["10.9.9.9"], "10.0.0.1"),  # not a trusted proxy: its header means nothing
    ("192.0.2.1", ["10.0.0.7"], "10.0.0.7"),
    ("192.0.2.1", ["10.0.0.99, 10.0.0.7"], "10.0.0.7"),  # the client's own hops are further left
    ("192.0.2.1", ["10.0.0.7, 192.0.2.2"], "10.0.0.7"),  # through two trusted proxies
    ("192.0.2.1", ["10.0.0.7", "10.0.0.8"], "10.0.0.8"),  # several headers: one list
    ("192.0.2.1", [], "192.0.2.1"),
])
def test_client_address_for_the_connection_cap(peer, forwarded, counted):
    from policy.clients import client_address
    assert client_address(peer, forwarded, frozenset({"192.0.2.1", "192.0.2.2"})) == counted
