"""An import request read as Glance 33 reads it (policy/imports.py), offline."""

from __future__ import annotations

import gzip
import json

import pytest

from policy.decision import Decision
from policy.imports import ImportBody, ImportRequest, parse

DIRECT = {"method": {"name": "glance-direct"}}


def body(doc, **kwargs) -> ImportBody:
    return ImportBody(json.dumps(doc).encode(), **kwargs)


@pytest.mark.parametrize("request_, stores, all_stores", [
    (body(DIRECT), None, False),
    (body({**DIRECT, "stores": ["fs", "fs2"]}), ("fs", "fs2"), False),
    (body({**DIRECT, "stores": {"fs": 1, "fs2": None}}), ("fs", "fs2"), False),  # Glance imports into the keys
    (body({**DIRECT, "all_stores": True}), None, True),
    (body(DIRECT, store_header="fs2"), ("fs2",), False),
    (body(DIRECT, store_header="fs,fs2"), ("fs,fs2",), False),  # duplicates joined: one (unknown) store id
    (ImportBody('{"method": {"name": "glance-\\u0064irect"}}'.encode()), None, False),
])
def test_targets_as_glance_reads_them(request_, stores, all_stores):
    assert parse(request_) == ImportRequest("glance-direct", stores, all_stores)


@pytest.mark.parametrize("request_", [
    ImportBody(gzip.compress(json.dumps(DIRECT).encode()), content_encoding="gzip"),
    ImportBody(json.dumps(DIRECT).encode(), content_encoding="identity"),  # any encoding: Glance reads raw bytes
    ImportBody(b""),
    ImportBody(b"\xef\xbb\xbf" + json.dumps(DIRECT).encode()),  # a BOM: Glance's json refuses it
    ImportBody(json.dumps(DIRECT).encode("utf-16")),
    ImportBody(b'{"method": {"name": "web-\xff"}}'),
    body([DIRECT]),
    body({"method": "glance-direct"}),
    body({"method": {"name": ["web-download"]}}),
    body({**DIRECT, "all_stores": "true"}),
    body({**DIRECT, "all_stores": True, "stores": ["fs"]}),
    body({**DIRECT, "all_stores": True}, store_header="fs"),
    body({**DIRECT, "stores": ["fs"]}, store_header="fs2"),
    body({**DIRECT, "stores": "fs2"}),  # Glance would iterate its characters
    body({**DIRECT, "stores": [["fs"]]}),
    body({**DIRECT, "stores": None}),
])
def test_what_the_gateway_cannot_read_exactly_is_refused(request_):
    refusal = parse(request_)
    assert isinstance(refusal, Decision) and (refusal.status, refusal.reason) == (400, "bad_request")
