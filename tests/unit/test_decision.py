"""The rules of the spec's status table (policy/decision.py), with plain
values: each refuses what the spec says, with the status and the reason, and
lets the rest through."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from policy import decision

from policy.decision import (IMPORT_BODY_LIMIT, Identity, Image, check_body, check_image, check_image_size,
                             check_import_body, check_media_type, quota_exceeded, upstream_reason)
from policy.refusal import QuotaFigures

ID = "0cb9328d-dd8c-41bb-b378-404b854b93b9"
ALICE = Identity("u1", "projA", frozenset({"member"}), expires_at=10_000)
ADMIN = Identity("u0", "admin", frozenset({"admin", "member"}), expires_at=10_000)


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


def test_import_body_is_bounded():
    assert check_import_body(100) is None
    assert check_import_body(IMPORT_BODY_LIMIT) is None
    assert check_import_body(IMPORT_BODY_LIMIT + 1).status == 400
    assert check_import_body(None).status == 400  # chunked: no declared length


@pytest.mark.parametrize("raw, status", [
    (None, None), (b"12", None), (b" 12 ", None), (b"-1", None),  # Glance's int() takes these
    ("²".encode(), 400), ("٣".encode(), 400), (b"1.0", 400), (b"12, 12", 400), (b"", 400),
])
def test_image_size_as_glance_reads_it(raw, status):
    refusal = check_image_size(raw)
    assert (refusal and (refusal.status, refusal.reason)) == ((status, "bad_request") if status else None)


def test_a_quota_refusal_names_the_resource_usage_limit_and_need():
    """README's example, word for word: a person reads the sizes, a script the exact figures."""
    mib = 1024 * 1024
    figures = QuotaFigures("image_size_total", "projQ", 4 * mib, 5 * mib, 2 * mib)
    refusal = quota_exceeded(figures)
    assert (refusal.status, refusal.reason, refusal.figures) == (413, "quota", figures)
    assert refusal.message == ("Quota image_size_total exceeded: projQ stores 4.0 MiB of 5.0 MiB; this upload "
                               "needs 2.0 MiB (used or reserved 4194304 bytes, limit 5242880, needed 2097152).")
    images = quota_exceeded(QuotaFigures("image_count_total", "p", 3, 3, 1)).message
    assert "p owns 3 images of 3; this request creates 1 more" in images


@pytest.mark.parametrize("status, reason", [
    (204, "ok"), (401, "token"), (409, "status"), (413, "quota"), (418, "bad_request"), (502, "upstream_error"),
])
def test_glances_own_answers_are_grouped_by_the_specs_reasons(status, reason):
    assert upstream_reason(status) == reason



def test_readmes_status_table_points_at_functions_that_exist():
    """Each `file` `Class.function` of the "produced by" column names a
    definition in that file (for ledger.lua, an op or a local); a bare
    `function` after `decision.` is one of policy/decision.py."""
    repo = Path(__file__).resolve().parents[2]
    table = [line.split("|") for line in (repo / "README.md").read_text().splitlines()
             if line.startswith("| ") and line.count("|") == 5 and line.split("|")[1].strip()[:1].isdigit()]
    assert len(table) > 15
    checked = 0
    for cells in table:
        column = cells[4]
        for path, name in re.findall(r"`((?:policy|addons)/[\w/]+\.(?:py|lua))`'?s? `([\w.]+)`", column):
            source = (repo / path).read_text()
            for part in name.split("."):
                defined = rf"(def|class|local|local function) {re.escape(part)}\b|op == '{re.escape(part)}'"
                assert re.search(defined, source), f"{path}: {name}"
            checked += 1
        for name in re.findall(r"`decision\.(\w+)`", column):
            assert hasattr(decision, name), name
            checked += 1
    assert checked > 30
